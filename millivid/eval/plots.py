"""Plots of consistency and quality against rollout length, as PNG bytes (matplotlib, Agg).

One line per method, reference lines dashed, 95% bootstrap bands shaded, the ground truth's
sharpness dotted black, and a grey band along the bottom of every panel marking the revisit
frames (its height: the share of examples whose frame revisits a context view). Every method
keeps its colour across plots. Figures are drawn without
pyplot (no global state); PNG output goes through the Agg renderer. x is the rollout frame (0 = first generated frame after the context).

    consistency_png(curves, methods, references)    # LPIPS, PSNR, SSIM; all frames and revisit frames
    quality_png(curves, methods, references, networks)   # Fréchet distance per chunk, sharpness
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from millivid.eval.fvd import FVD, STANDIN
from millivid.eval.tables import GROUND_TRUTH, where

LABELS = {
    "lpips": "LPIPS (lower is better)",
    "psnr": "PSNR dB (higher is better)",
    "ssim": "SSIM (higher is better)",
    "sharpness": "sharpness: Laplacian variance",
    FVD: "FVD (I3D) per chunk",
    STANDIN: "fvd_standin_randproj per chunk (NOT FVD)",
}
PANEL = (4.2, 3.2)


def consistency_png(curves: pa.Table, methods: Sequence[str], references: Sequence[str]) -> bytes:
    metrics = ("lpips", "psnr", "ssim")
    figure = Figure(figsize=(PANEL[0] * len(metrics), PANEL[1] * 2), layout="constrained")
    axes = figure.subplots(2, len(metrics), squeeze=False)
    for row, subset in enumerate(("all", "revisit")):
        for column, metric in enumerate(metrics):
            ax = axes[row, column]
            draw_lines(ax, curves, metric, subset, methods, references)
            ax.set_title(f"{metric.upper()} on {'all' if subset == 'all' else 'revisit'} frames")
            ax.set_ylabel(LABELS[metric])
            ax.set_xlabel("rollout frame")
            mark_revisits(ax, curves)
    axes[0, 0].legend(fontsize="small")
    return png(figure)


def quality_png(curves: pa.Table, methods: Sequence[str], references: Sequence[str], networks: Sequence[str]) -> bytes:
    metrics = [*networks, "sharpness"]
    figure = Figure(figsize=(PANEL[0] * len(metrics), PANEL[1]), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        draw_lines(ax, curves, metric, "all", methods, references, marker="o" if metric != "sharpness" else None)
        truth = where(curves, method=GROUND_TRUTH, metric=metric, subset="all")
        if len(truth):
            ax.plot(truth["frame"].to_numpy(), truth["mean"].to_numpy(), ":", color="black", label=GROUND_TRUTH)
        ax.set_title(LABELS.get(metric, metric))
        ax.set_xlabel("rollout frame")
        mark_revisits(ax, curves)
    axes[0].legend(fontsize="small")
    return png(figure)


def draw_lines(ax: Axes, curves: pa.Table, metric: str, subset: str, methods: Sequence[str], references: Sequence[str], marker: str | None = None) -> None:
    colours = matplotlib.colormaps["tab10"]
    for index, name in enumerate([*methods, *references]):
        curve = where(curves, method=name, metric=metric, subset=subset)
        if not len(curve):
            continue
        frames, mean = curve["frame"].to_numpy(), curve["mean"].to_numpy()
        low, high = curve["ci_low"].to_numpy(), curve["ci_high"].to_numpy()
        style = "--" if name in references else "-"
        ax.plot(frames, mean, style, color=colours(index % 10), label=name, marker=marker, markersize=3)
        if np.isfinite(low).any():
            ax.fill_between(frames, low, high, color=colours(index % 10), alpha=0.2, linewidth=0)


def revisit_share(curves: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(frames,), (frames,): the share of examples whose rollout frame revisits a context view."""
    lpips = where(curves, metric="lpips")
    if not len(lpips):
        return np.zeros(0, np.int64), np.zeros(0)
    first = lpips["method"][0].as_py()
    everything = where(lpips, method=first, subset="all")
    revisits = where(lpips, method=first, subset="revisit")
    share = revisits["examples"].to_numpy() / np.maximum(everything["examples"].to_numpy(), 1)
    return everything["frame"].to_numpy(), share


REVISIT_BAND = 0.08  # height of a frame every example revisits, as a share of the panel


def mark_revisits(ax: Axes, curves: pa.Table) -> None:
    frames, share = revisit_share(curves)
    if share.any():
        ax.fill_between(frames, 0, share * REVISIT_BAND, step="mid", transform=ax.get_xaxis_transform(),
                        color="grey", alpha=0.5, linewidth=0, label="revisit frames (share of examples)")


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
