"""Plots of consistency and quality against rollout length, as PNG bytes (matplotlib, Agg).

One line per method, reference lines dashed, 95% bootstrap bands shaded, the ground truth's
sharpness dotted black, and a grey band along the bottom of every panel marking the revisit
frames (its height: the share of examples whose frame revisits a context view). Every method
keeps its colour across plots. Figures are drawn without
pyplot (no global state); PNG output goes through the Agg renderer. x is the rollout frame (0 = first generated frame after the context).

    consistency_png(curves, methods, references)    # LPIPS, PSNR, SSIM; all frames and revisit frames
    quality_png(curves, methods, references, networks)   # Fréchet distance per chunk, sharpness
    latent_memory_png(summary["latent_memory"], methods) # per level: latent MSE on revisit frames, bars
    knockout_png(summary_by_level, method)                # per level: v-MSE intact / knocked / control, bars
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from millivid.eval.config import GROUND_TRUTH
from millivid.eval.fvd import FVD, STANDIN
from millivid.eval.stats import interval_text
from millivid.eval.tables import where

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


def latent_memory_png(memory: Mapping[str, Any], methods: Sequence[str]) -> bytes:
    """One panel per level of the summary's latent_memory: a bar per candidate (mean latent MSE on
    revisit frames, 95% CI whisker); methods in their colour, hatched where the level is derived
    (re-encoded, not denoised), latent references grey and hatched."""
    levels = memory["levels"]
    figure = Figure(figsize=(PANEL[0] * len(levels), PANEL[1] + 0.6), layout="constrained")
    axes = figure.subplots(1, len(levels), squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, (level, entries) in zip(axes, levels.items(), strict=True):
        for x, (name, entry) in enumerate(entries.items()):
            colour = "lightgrey" if entry["reference"] else colours(methods.index(name) % 10)
            hatch = "//" if entry["reference"] else "xx" if entry["derived"] else None
            ax.bar(x, entry["mse"]["mean"] or 0.0, yerr=whisker(entry["mse"]), color=colour, hatch=hatch, edgecolor="dimgrey", capsize=3)
        labels = [f"{name} (derived)" if entry["derived"] else name for name, entry in entries.items()]
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
        ax.set_title(f"level {level}{' (finest)' if int(level) == 0 else ''}: latent MSE on revisit frames")
        ax.set_ylabel("MSE (lower is better)")
    return png(figure)


def knockout_png(levels: Mapping[int, Mapping[str, Any]], method: str) -> bytes:
    """One panel per level of `millivid.eval.knockout.summarize_knockout`: the v-MSE on revisit
    frames with every context frame (intact), without the revisited one (knocked) and without
    another one (control), 95% CI whiskers; the title gives the memory effect (knocked - control)."""
    figure = Figure(figsize=(PANEL[0] * len(levels), PANEL[1] + 0.4), layout="constrained")
    axes = figure.subplots(1, len(levels), squeeze=False)[0]
    for ax, (level, entry) in zip(axes, levels.items(), strict=True):
        for x, (name, colour) in enumerate((("intact", "tab:blue"), ("knocked", "tab:red"), ("control", "lightgrey"))):
            ax.bar(x, entry[name]["mean"] or 0.0, yerr=whisker(entry[name]), color=colour, edgecolor="dimgrey", capsize=3)
        ax.set_xticks(range(3), ["intact", "revisited\nknocked out", "other frame\nknocked out"], fontsize="small")
        ax.set_title(f"{method}, level {level}, {entry['cases']} cases\nmemory effect {interval_text(entry['memory_effect'])}",
                     fontsize="medium")
        ax.set_ylabel("v-MSE on revisit frames (lower is better)")
    return png(figure)


def whisker(interval: Mapping[str, Any]) -> list[list[float]] | None:
    """A bar's (2, 1) error extent from a summary interval; None where the CI is undefined."""
    mean, low, high = interval["mean"], interval["ci_low"], interval["ci_high"]
    if mean is None or low is None or high is None:
        return None
    return [[mean - low], [high - mean]]


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
