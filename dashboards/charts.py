"""Plotly figures of curves against rollout length, with the site's colours and run styling.

    figure = curve_figure("LPIPS ↓ · revisit frames", "LPIPS", [RunCurve(run, curve), ...], sparse=True)

One colour per line name (a method keeps its colour on every chart), one dash or marker per run.
The legend has one entry per line name: clicking it hides that method (or reference) in every run;
runs are shown and hidden with the page's run selector, which shows each run's dash.
Dense curves get a shaded 95% band; sparse ones (revisit frames, which only some frames are) get
markers with error bars, since a band through gaps reads as data that is not there. Every trace
carries `meta.runs` so the page's run selector can show and hide a run on every chart at once.
Arrays go out as float32 typed arrays (plotly's base64 encoding): smaller, and fast to parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from millivid_dashboards.curves import Curve

METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22")
REFERENCE_COLOURS = {
    "ground_truth": "#000000",
    "ground_truth_latents": "#555555",
    "context_mean": "#7f7f7f",
    "nearest_pose": "#8c564b",
    "copy_last": "#c49c94",
    "random_frames": "#b0b0b0",
    "copy_revisited": "#8c564b",
}
RUN_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SVG_DASHES = {"solid": "", "dash": "9,3", "dot": "2,3", "dashdot": "9,3,2,3", "longdash": "15,3", "longdashdot": "15,3,2,3"}
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
CHART_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


@dataclass(frozen=True)
class RunStyle:
    """How one line source (a run, or several runs sharing one cached result) is drawn."""

    keys: tuple[str, ...]  # the runs' ids: the run selector shows it while any of them is selected
    label: str
    index: int  # position of its first run among the site's runs: its dash and marker
    visible: bool  # shown when the page opens

    @property
    def key(self) -> str:
        return self.keys[0]


@dataclass(frozen=True)
class RunCurve:
    run: RunStyle
    curve: Curve


class Palette:
    """Line name -> colour, stable across every chart of the site (methods in order of appearance)."""

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}

    def colour(self, name: str) -> str:
        if name in REFERENCE_COLOURS:
            return REFERENCE_COLOURS[name]
        if name not in self.assigned:
            self.assigned[name] = METHOD_COLOURS[len(self.assigned) % len(METHOD_COLOURS)]
        return self.assigned[name]


def translucent(colour: str, alpha: float = 0.15) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def float32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def x_axis(frames: np.ndarray) -> dict:
    """Evenly spaced frames as x0/dx (no array to ship), others as they are."""
    frames = np.asarray(frames)
    if len(frames) and np.array_equal(frames, np.arange(frames[0], frames[0] + len(frames))):
        return {"x0": int(frames[0]), "dx": 1}
    return {"x": frames.astype(np.int32)}


def run_dash(run: RunStyle) -> str:
    return RUN_DASHES[run.index % len(RUN_DASHES)]


def curve_traces(item: RunCurve, colour: str, sparse: bool, in_legend: bool) -> list[go.Scatter]:
    run, curve = item.run, item.curve
    common = {"legendgroup": curve.name, "meta": {"runs": list(run.keys)}, "visible": run.visible, **x_axis(curve.frames)}
    dash = run_dash(run)
    hover = f"{curve.name} · {run.label}<br>frame %{{x}}: %{{y:.4g}}<br>%{{customdata}} examples<extra></extra>"
    if sparse:
        return [go.Scatter(
            y=float32(curve.mean), name=curve.name, showlegend=in_legend, mode="markers+lines", customdata=curve.examples.astype(np.int32),
            line={"color": colour, "dash": dash, "width": 1}, connectgaps=False,
            marker={"color": colour, "symbol": RUN_SYMBOLS[run.index % len(RUN_SYMBOLS)], "size": 6},
            error_y={"type": "data", "symmetric": False, "array": float32(curve.high - curve.mean),
                     "arrayminus": float32(curve.mean - curve.low), "color": colour, "thickness": 1, "width": 3},
            hovertemplate=hover, **common,
        )]
    traces = []
    if np.isfinite(curve.low).any():  # lower edge, then the upper edge filled down to it
        band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, **common}
        traces += [go.Scatter(y=float32(curve.low), **band),
                   go.Scatter(y=float32(curve.high), fill="tonexty", fillcolor=translucent(colour), **band)]
    traces.append(go.Scatter(
        y=float32(curve.mean), name=curve.name, showlegend=in_legend, mode="lines" if len(curve.frames) > 1 else "markers",
        customdata=curve.examples.astype(np.int32), line={"color": colour, "dash": dash, "width": 2 if not curve.reference else 1.5},
        hovertemplate=hover, **common,
    ))
    return traces


def curve_figure(title: str, y_title: str, items: Sequence[RunCurve], palette: Palette, sparse: bool = False,
                 x_title: str = "rollout frame") -> go.Figure:
    figure = go.Figure()
    named = set()
    for item in items:
        colour = palette.colour(item.curve.name)
        figure.add_traces(curve_traces(item, colour, sparse, item.curve.name not in named))
        named.add(item.curve.name)
    style(figure, title, x_title, y_title)
    return figure


def style(figure: go.Figure, title: str, x_title: str, y_title: str, height: int = 420) -> None:
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}}, template="plotly_white", height=height,
        margin={"l": 60, "r": 10, "t": 40, "b": 45}, hovermode="closest",
        legend={"font": {"size": 11}, "itemclick": "toggle", "itemdoubleclick": "toggleothers"},
        xaxis_title=x_title, yaxis_title=y_title,
    )
