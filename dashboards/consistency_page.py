"""Consistency and quality against rollout length, every run's methods and reference lines together.

Consistency (LPIPS, PSNR, SSIM) on all frames, on revisit frames, and on revisit frames within and
out of each method's reach; quality (sharpness per frame, the video-distribution distance per
chunk); the per-level latent memory on revisit frames. A subset no example has a frame of gets a
sentence instead of an empty chart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from millivid_dashboards.charts import Palette, RunCurve, RunStyle, curve_figure
from millivid_dashboards.curves import (
    SUBSETS,
    EvaluationTables,
    frame_curves,
    latent_memory_curves,
    latent_memory_levels,
    quality_curves,
)
from millivid_dashboards.page import Page, escape

CONSISTENCY = (("lpips", "LPIPS ↓"), ("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"))
QUALITY_TITLES = {"sharpness": "Sharpness (variance of the Laplacian; the ground truth in black)"}


def consistency_page(sources: Sequence[tuple[RunStyle, EvaluationTables]], palette: Palette) -> Page:
    page = Page("consistency.html", "Consistency and quality against rollout length")
    if not sources:
        page.add("<p>None of the runs has an evaluation.</p>")
        return page
    page.add("<p>One colour per method or reference line, one dash (or marker) per run; shaded bands and error bars are "
             "bootstrap 95% intervals over examples. Click a legend entry to hide a line, double-click to show it alone; "
             "hover for values. Revisit subsets only have points at frames some example revisits.</p>")
    for subset, (title, _) in SUBSETS.items():
        page.add(f"<h3>Consistency · {escape(title)}</h3>")
        charts = []
        for metric, label in CONSISTENCY:
            items = [RunCurve(run, curve) for run, tables in sources for curve in frame_curves(tables, metric, subset)
                     if np.isfinite(curve.mean).any()]  # a method with no frame in the subset gets no legend entry
            if items:
                figure = curve_figure(f"{label} · {title}", label, items, palette, sparse=subset != "all")
                charts.append(page.chart(figure))
        page.add(f"<div class='grid'>{''.join(charts)}</div>" if charts else
                 f"<p>No run's examples have {escape(title)}: nothing to draw.</p>")
    page.add("<h3>Quality</h3>", quality_charts(page, sources, palette))
    page.add("<h3>Latent memory per level · revisit frames</h3>", latent_memory_charts(page, sources, palette))
    return page


def quality_charts(page: Page, sources: Sequence[tuple[RunStyle, EvaluationTables]], palette: Palette) -> str:
    by_metric: dict[str, list[RunCurve]] = {}
    for run, tables in sources:
        for metric, curves in quality_curves(tables).items():
            by_metric.setdefault(metric, []).extend(RunCurve(run, curve) for curve in curves)
    charts = []
    for metric, items in by_metric.items():
        title = QUALITY_TITLES.get(metric, f"{metric} per chunk (at each chunk's last frame) ↓")
        charts.append(page.chart(curve_figure(title, metric, items, palette)))
    return f"<div class='grid'>{''.join(charts)}</div>"


def latent_memory_charts(page: Page, sources: Sequence[tuple[RunStyle, EvaluationTables]], palette: Palette) -> str:
    levels = sorted({level for _, tables in sources for level in latent_memory_levels(tables)})
    if not levels:
        return "<p>No run measured latent memory (it needs revisit frames and the evaluation's latents).</p>"
    charts = []
    for level in levels:
        items = [RunCurve(run, curve) for run, tables in sources if level in latent_memory_levels(tables)
                 for curve in latent_memory_curves(tables, level)]
        title = f"Latent MSE ↓ · level {level}{' (finest)' if level == 0 else ''}"
        charts.append(page.chart(curve_figure(title, "latent MSE", items, palette, sparse=True)))
    return ("<p>Mean squared error of each candidate's level latents against the true ones on revisit frames. A method with "
            "memory sits below context_mean and random_frames at the coarse levels, towards copy_revisited.</p>"
            f"<div class='grid'>{''.join(charts)}</div>")
