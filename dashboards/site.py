"""The comparison site: static pages built from pipeline runs in MLflow, opened from disk.

    index = build_site(run_ids, out_dir, settings)       # collect the runs from MLflow, then write the site
    index = write_site(runs, out_dir, settings, title)   # from runs already collected

    out_dir/index.html            overview: runs, links, verdicts, what differs (config, versions), tables
           consistency.html       consistency and quality curves, latent memory per level
           reconstruction.html    reconstruction quality against token budget, images per level
           schedules.html         each method's schedule, animated
           rollouts.html          videos side by side on one clock, revisit frames on a timeline
           assets/                plotly.min.js (from the plotly package), site.js (glue), site.css
           data/<chart>.js        one file per chart, loaded when the chart comes into view
           media/                 videos, strips and reconstruction images

Nothing is fetched at run time: the site works offline and from any folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from plotly.offline import get_plotlyjs

from millivid_dashboards.charts import Palette, RunStyle
from millivid_dashboards.collect import PipelineRun, collect_runs
from millivid_dashboards.consistency_page import consistency_page
from millivid_dashboards.curves import EvaluationTables
from millivid_dashboards.overview import overview_page
from millivid_dashboards.page import PLOTLY_JS, SiteInfo, chart_script
from millivid_dashboards.reconstruction_page import reconstruction_page
from millivid_dashboards.rollout_view import rollout_players
from millivid_dashboards.rollouts_page import rollouts_page
from millivid_dashboards.schedules_page import schedules_page
from millivid_dashboards.sources import run_styles, shared
from millivid_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

VISIBLE_RUNS = 3  # runs shown when a page opens; the others are one click away (charts stay light)
ASSETS = ("site.js", "site.css")
GENERATED = ("assets", "data", "media")  # folders the site owns: cleared when rebuilt in place


def build_site(run_ids: Sequence[str], out: Path, settings: PlatformSettings, title: str = "MilliVid runs",
               baseline_ids: frozenset[str] = frozenset()) -> Path:
    """Collect the pipeline runs (an id of a stage run stands for its pipeline run) and write the site."""
    with tempfile.TemporaryDirectory(prefix="millivid-site-") as downloads:
        runs = collect_runs(list(run_ids), Path(downloads), baseline_ids)
        return write_site(runs, out, settings, title)


def write_site(runs: Sequence[PipelineRun], out: Path, settings: PlatformSettings, title: str, visible: int = VISIBLE_RUNS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for folder in GENERATED:
        shutil.rmtree(out / folder, ignore_errors=True)
    styles = run_styles(runs, visible)
    palette = Palette()
    evaluations = shared(runs, styles, lambda run: run.evaluation.source_run_id if run.evaluation else None)
    tables = [(style, EvaluationTables.read(run.evaluation)) for style, run in evaluations]
    reconstructions = shared(runs, styles, lambda run: run.reconstruction.key if run.reconstruction else None)
    players = rollout_players([(style, found, run.evaluation) for (style, found), (_, run) in zip(tables, evaluations, strict=True)])
    pages = [
        overview_page(runs, settings, notes(tables)),
        consistency_page(tables, palette),
        reconstruction_page([(style, run.reconstruction) for style, run in reconstructions], palette, out),
        schedules_page(runs, styles),
        rollouts_page(players, palette, out),
    ]
    write_assets(out)
    site = SiteInfo(title, hashlib.sha256(" ".join(run.run_id for run in runs).encode()).hexdigest()[:12], tuple(styles.values()))
    (out / "data").mkdir(exist_ok=True)
    for page in pages:
        (out / page.file).write_text(page.html(site), encoding="utf-8")
        for chart_id, figure in page.charts.items():
            (out / "data" / f"{chart_id}.js").write_text(chart_script(chart_id, figure), encoding="utf-8")
    log.info("site of %d run(s) written to %s", len(runs), out)
    return out / "index.html"


def write_assets(out: Path) -> None:
    """plotly.js from the plotly package (it embeds the library), the glue script and the style sheet."""
    (out / PLOTLY_JS).parent.mkdir(parents=True, exist_ok=True)
    (out / PLOTLY_JS).write_text(get_plotlyjs(), encoding="utf-8")
    package = resources.files("millivid_dashboards") / "assets"
    for name in ASSETS:
        (out / "assets" / name).write_bytes((package / name).read_bytes())


def notes(tables: Sequence[tuple[RunStyle, EvaluationTables]]) -> list[str]:
    """What a reader must know before comparing numbers."""
    backbones = {found.summary.get("lpips_backbone", "") for _, found in tables}
    if any(str(backbone).endswith(":random") for backbone in backbones):
        return ["LPIPS used a RANDOM backbone in at least one run (pretrained AlexNet weights were not available): "
                "compare methods with each other, not with published LPIPS numbers."]
    return []
