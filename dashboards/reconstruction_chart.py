"""Reconstruction quality against token budget: each autoencoder variant decoding from one level.

    figure = reconstruction_figure([(run, reconstruction), ...], palette)

One panel per metric (PSNR, SSIM, LPIPS), x = tokens per frame of the level (log scale: levels
differ by a factor of 4), one line per variant and autoencoder; hierarchical vs downscaled is the
paper's ablation. The hover names the level.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from millivid_dashboards.charts import RUN_SYMBOLS, Palette, RunStyle, run_dash, style
from millivid_dashboards.collect import Reconstruction

METRICS = (("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"))


def reconstruction_figure(items: Sequence[tuple[RunStyle, Reconstruction]], palette: Palette) -> go.Figure:
    figure = make_subplots(rows=1, cols=len(METRICS), subplot_titles=[label for _, label in METRICS], horizontal_spacing=0.08)
    named = set()
    for run, found in items:
        for variant in found.variants:
            tokens = [row["tokens"] for row in found.levels]
            levels = [row["level"] for row in found.levels]
            name = f"{variant} · {run.label}"
            for column, (metric, _) in enumerate(METRICS, start=1):
                figure.add_trace(go.Scatter(
                    x=tokens, y=[row[variant][metric] for row in found.levels], customdata=levels, name=variant,
                    mode="lines+markers", legendgroup=variant, showlegend=variant not in named,
                    line={"color": palette.colour(variant), "dash": run_dash(run)},
                    marker={"symbol": RUN_SYMBOLS[run.index % len(RUN_SYMBOLS)], "size": 8},
                    meta={"runs": list(run.keys)}, visible=run.visible,
                    hovertemplate=f"{name}<br>level %{{customdata}} · %{{x}} tokens/frame: %{{y:.4g}}<extra></extra>",
                ), row=1, col=column)
                named.add(variant)
    tokens = sorted({row["tokens"] for _, found in items for row in found.levels})
    figure.update_xaxes(type="log", title_text="tokens per frame", tickvals=tokens, ticktext=[str(count) for count in tokens])
    style(figure, "Reconstruction quality against token budget (each level decoded alone)", "tokens per frame", "", height=380)
    return figure
