"""Reconstruction quality against token budget, hierarchical vs downscaled, with the images decoded
from each level (the autoencoder stage's comparison figure, or its training run's last
reconstructions when only the hierarchical model was trained)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from millivid_dashboards.charts import Palette, RunStyle
from millivid_dashboards.collect import Reconstruction
from millivid_dashboards.page import Page, escape
from millivid_dashboards.reconstruction_chart import reconstruction_figure
from millivid_dashboards.tables import interval_cell


def reconstruction_page(sources: Sequence[tuple[RunStyle, Reconstruction]], palette: Palette, site: Path) -> Page:
    page = Page("reconstruction.html", "Reconstruction quality against token budget")
    if not sources:
        page.add("<p>None of the runs has an autoencoder evaluation.</p>")
        return page
    if all(len(found.variants) == 1 for _, found in sources):
        page.add("<p class='note'>Only the hierarchical autoencoder was trained: set "
                 "<code>autoencoder.compare_downscaled=true</code> for the downscaled variant (the paper's ablation), "
                 "or run <code>millivid ae eval</code>.</p>")
    page.add(page.chart(reconstruction_figure(sources, palette)))
    for run, found in sources:
        page.add(f"<div data-runs='{escape(' '.join(run.keys))}'><h3>{escape(run.label)}</h3>", difference_table(found))
        if found.figure is not None:
            target = f"media/reconstruction-{hashlib.sha256(found.key.encode()).hexdigest()[:12]}{found.figure.suffix}"
            (site / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found.figure, site / target)
            page.add(f"<figure><img class='pixels' loading='lazy' src='{escape(target)}' alt='frames decoded from each level'>"
                     "<figcaption>ground truth, then the frame decoded from each level alone</figcaption></figure>")
        page.add("</div>")
    return page


def difference_table(found: Reconstruction) -> str:
    """Per level: tokens, each variant's numbers, and the paired PSNR difference when two were compared."""
    header = "".join(f"<th>{escape(variant)} PSNR / SSIM / LPIPS</th>" for variant in found.variants)
    paired = len(found.variants) == 2
    if paired:
        header += f"<th>PSNR {escape(found.variants[0])} − {escape(found.variants[1])} (dB) [95% CI]</th>"
    rows = []
    for row in found.levels:
        cells = "".join(f"<td>{number(row[v]['psnr'], 2)} / {number(row[v]['ssim'], 3)} / {number(row[v]['lpips'], 3)}</td>"
                        for v in found.variants)
        if paired:
            cells += f"<td>{interval_cell(row.get('psnr_difference'))}</td>"
        rows.append(f"<tr><td>{row['level']}</td><td>{row['tokens']}</td>{cells}</tr>")
    return f"<table><tr><th>level</th><th>tokens / frame</th>{header}</tr>{''.join(rows)}</table>"


def number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
