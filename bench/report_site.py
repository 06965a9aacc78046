"""Size and load time of the comparison site with 20 runs and 1,024-frame rollouts.

The runs are synthesised in a fresh MLflow store (SQLite in a temporary workspace) the way the
pipeline records them: a parent run with the resolved config (the cpu preset, rollout 1,024 frames,
one override per run so the configs differ) and nested stage runs; the evaluate run's artifacts are
written by the evaluation's own code (`millivid.eval.compare.finish` and `EvaluationResult.write`)
from synthetic per-frame rows, features and latent-memory rows, with two side-by-side videos of
16 context + 1,024 frames (encoded once, logged for every run). The site is then built with
`millivid_dashboards.site` and every page opened in headless Chromium: time to the load event,
time until every chart is drawn (each scrolled into view), console errors, videos' durations; once
with the default three runs shown and once with all twenty.

    millivid bench report_site --json            # --quick: 3 runs of 64 frames
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from millivid.config import ExperimentConfig, load_config
from millivid.eval.compare import SubsetResult, finish
from millivid.eval.config import GROUND_TRUTH, REFERENCE_NAMES
from millivid.eval.fvd import STANDIN
from millivid.eval.latent_memory import LATENT_REFERENCES
from millivid.eval.protocol import Example
from millivid.eval.tables import (
    FEATURE_SCHEMA,
    FRAME_METRICS,
    LATENT_MEMORY_KEYS,
    LATENT_MEMORY_SCHEMA,
    ROW_KEYS,
    ROW_SCHEMA,
    concat_sorted,
    example_rows,
    feature_rows,
    latent_memory_rows,
)

METHODS = ("millivid", "full_res", "framepack")
EXAMPLES, VIDEOS, FEATURE_WIDTH = 8, 2, 16
PAGES = ("index.html", "consistency.html", "reconstruction.html", "schedules.html", "rollouts.html")
VARIED = ("eval.bootstrap", "diffusion.train.lr", "diffusion.sampler.steps")  # one differs per run
BROWSER_TIMEOUT_MS = 600_000  # per wait: a chart of every run's 1,024-frame curves takes long to draw


def run(quick: bool = False) -> dict:
    runs, frames = (3, 64) if quick else (20, 1024)
    with tempfile.TemporaryDirectory(prefix="bench-site-") as folder, workspace(Path(folder)) as settings:
        started = time.perf_counter()
        run_ids = synthesise_runs(settings, runs, frames, Path(folder) / "scratch")
        synthesis = time.perf_counter() - started
        from millivid_dashboards.site import build_site, write_site

        started = time.perf_counter()
        index = build_site(run_ids, Path(folder) / "site", settings, "bench")
        build = time.perf_counter() - started
        result = {
            "benchmark": "report_site", "runs": runs, "rollout_frames": frames, "examples": EXAMPLES,
            "machine": machine(), "synthesis_s": round(synthesis, 1), "build_s": round(build, 1),
            "site": site_sizes(index.parent),
            "browser_default_runs_shown": browse(index.parent),
        }
        from millivid_dashboards.collect import collect_runs

        everything = Path(folder) / "site-all"  # the same runs, every one shown when a page opens
        write_site(collect_runs(run_ids, Path(folder) / "downloads"), everything, settings, "bench", visible=runs)
        # every run's lines on a chart: how long the first chart of each page takes to draw
        result["browser_all_runs_shown"] = browse(everything, ("consistency.html", "rollouts.html"), max_charts=1)
        return result


@contextlib.contextmanager
def workspace(folder: Path):
    """A fresh embedded workspace (MLflow on SQLite) for the synthesised runs."""
    from millivid_platform import tracking
    from millivid_platform.settings import load_settings

    saved = {name: os.environ.get(name) for name in ("MILLIVID_WORKSPACE", "MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    os.environ.update({"MILLIVID_WORKSPACE": str(folder / "workspace"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        settings = load_settings()
        settings.workspace.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri
        tracking.configure(settings)
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def synthesise_runs(settings, runs: int, frames: int, scratch: Path) -> list[str]:
    import mlflow

    from millivid_platform import tracking

    experiment_id = tracking.configure(settings)
    videos: dict[str, Path] = {}
    run_ids = []
    for index in range(runs):
        config = run_config(index, frames)
        parent = tracking.create_run(experiment_id, f"pipeline-bench-{index:02d}", "pipeline", config, None,
                                     {"millivid.config_name": config.name, "millivid.prefect_flow_run": "none"})
        tracking.log_config(config, parent)
        evaluation = scratch / f"evaluation-{index}"
        written = synthetic_evaluation(config, index, with_videos=not videos).write(str(evaluation))
        videos = videos or {name: Path(uri) for name, uri in written.items() if name.startswith("videos/")}
        for name, path in videos.items():  # every run shows the same two videos (encoding is the slow part)
            target = evaluation / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_bytes(path.read_bytes())
        evaluate = stage_run(experiment_id, parent, "evaluate", config, {"evaluation_uri": str(evaluation)})
        mlflow.MlflowClient().log_artifacts(evaluate, str(evaluation), "evaluation")
        autoencoder = stage_run(experiment_id, parent, "autoencoder", config, {})
        tracking.log_artifact_bytes(json.dumps(level_comparison(config)).encode(), "comparison/levels.json", autoencoder)
        for run_id in (evaluate, autoencoder, parent):
            mlflow.MlflowClient().set_terminated(run_id)
        run_ids.append(parent)
    return run_ids


def stage_run(experiment_id: str, parent: str, name: str, config: ExperimentConfig, outputs: dict) -> str:
    """A nested stage run as run_stage records one (left running: the caller logs into it, then ends it)."""
    from millivid_platform import tracking

    return tracking.create_run(experiment_id, name, name, config, parent, {"millivid.outputs": json.dumps(outputs)})


def run_config(index: int, frames: int) -> ExperimentConfig:
    key = VARIED[index % len(VARIED)]
    value = {"eval.bootstrap": 1000 + index, "diffusion.train.lr": 3e-4 * (1 + index / 10), "diffusion.sampler.steps": 10 + index}[key]
    return load_config("cpu", [f"eval.rollout={frames}", f"{key}={value}"])


def synthetic_evaluation(config: ExperimentConfig, seed: int, with_videos: bool):
    """The evaluation's outputs for synthetic rows: curves, summary, plots (and videos) by its own code."""
    cfg = config.eval
    rng = np.random.default_rng(seed)
    names = [*METHODS, *REFERENCE_NAMES]
    examples = [Example(index, f"ep-{index:06d}", 0, index, 0) for index in range(EXAMPLES)]
    rows, features, memory, showcase = [], [], [], {}
    for example in examples:
        revisit_of = revisit_pattern(cfg.rollout, cfg.context, example.index)
        truth = rng.random(cfg.rollout) * 0.1
        for position, name in enumerate(names):
            drift = np.cumsum(rng.normal(0, 0.002, cfg.rollout)) + 0.1 + 0.03 * position
            metrics = {"lpips": drift, "psnr": 20 - 10 * drift, "ssim": 1 - 2 * drift, "sharpness": truth * (1 - drift)}
            within = within_reach(name, revisit_of)
            rows.append(example_rows(name, example, {m: metrics[m] for m in FRAME_METRICS}, truth, revisit_of, within))
            chunks = cfg.rollout // cfg.fvd_chunk
            features.append(feature_rows(STANDIN, name, example.index, rng.normal(position * 0.1, 1, (chunks, FEATURE_WIDTH))))
            if name in METHODS:
                memory += candidate_memory(name, example.index, revisit_of, rng, within)
        features.append(feature_rows(STANDIN, GROUND_TRUTH, example.index, rng.normal(0, 1, (cfg.rollout // cfg.fvd_chunk, FEATURE_WIDTH))))
        memory += [candidate_memory(name, example.index, revisit_of, rng, pa.nulls(int((revisit_of >= 0).sum()), pa.bool_()))[0]
                   for name in LATENT_REFERENCES]
        if with_videos and example.index < VIDEOS:
            showcase[example.index] = showcase_frames(names, cfg, rng)
    subset = SubsetResult(
        rows=concat_sorted(rows, ROW_SCHEMA, ROW_KEYS), features=concat_sorted(features, FEATURE_SCHEMA, ("network", "method", "example", "chunk")),
        showcase=showcase, fvd_status={"available": False, "reason": "synthetic"}, lpips_backbone="alex:pretrained",
        latent_memory=concat_sorted(memory, LATENT_MEMORY_SCHEMA, LATENT_MEMORY_KEYS),
    )
    return finish(subset, examples, list(METHODS), list(REFERENCE_NAMES), cfg)


def revisit_pattern(rollout: int, context: int, example: int) -> np.ndarray:
    """(rollout,) the context frame each frame revisits, -1 if none: a loop back every 64 frames."""
    frames = np.arange(rollout)
    revisit = (frames + 8 * example) % 64 >= 48
    return np.where(revisit, (frames * 7 + example) % context, -1).astype(np.int32)


def within_reach(name: str, revisit_of: np.ndarray) -> pa.Array | None:
    if name not in METHODS:
        return None
    revisit = revisit_of >= 0
    seen = {"millivid": np.ones_like(revisit), "full_res": np.zeros_like(revisit), "framepack": np.arange(len(revisit)) % 2 == 0}[name]
    return pa.array(seen.astype(bool), mask=~revisit)


def candidate_memory(name: str, example: int, revisit_of: np.ndarray, rng, within) -> list[pa.Table]:
    frames = np.flatnonzero(revisit_of >= 0)
    within = within.filter(pa.array(revisit_of >= 0)) if len(within) == len(revisit_of) else within
    return [latent_memory_rows(name, example, level, frames, rng.random(len(frames)) * (level + 1), within, False)
            for level in range(3)]


def showcase_frames(names: list[str], cfg, rng) -> dict[str, np.ndarray]:
    """Blocky 16x16 scenes panning one pixel every 4 frames, like the built-in world's frames under a
    turning camera (random noise would make videos no rollout ever makes: incompressible)."""
    def panning(frames: int) -> np.ndarray:
        scene = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        return np.stack([np.roll(scene, step // 4, axis=1) for step in range(frames)])

    shown = cfg.context - max(0, cfg.context - cfg.video_context)
    return {GROUND_TRUTH: panning(shown + cfg.rollout), **{name: panning(cfg.rollout) for name in names}}


def level_comparison(config: ExperimentConfig) -> dict:
    tokens = config.geometry.tokens_per_level
    return {"compared": ["hierarchical", "downscaled"], "levels": [
        {"level": level, "tokens": count, "hierarchical": {"psnr": 30 - 3 * level, "ssim": 0.9 - 0.1 * level, "lpips": 0.1 * (level + 1)},
         "downscaled": {"psnr": 29 - 4 * level, "ssim": 0.88 - 0.12 * level, "lpips": 0.12 * (level + 1)},
         "psnr_difference": {"mean": 1.0 + level, "ci_low": 0.5 + level, "ci_high": 1.5 + level, "examples": 64}}
        for level, count in enumerate(tokens)]}


def site_sizes(site: Path) -> dict:
    """Bytes a reader's browser reads: each page's HTML, scripts and its charts' data files; media apart."""
    def size(paths) -> int:
        return sum(path.stat().st_size for path in paths)

    assets = size((site / "assets").glob("*"))
    pages = {}
    for page in PAGES:
        charts = list((site / "data").glob(f"{page.removesuffix('.html')}-*.js"))
        pages[page] = {"html_kb": round((site / page).stat().st_size / 1024), "charts": len(charts),
                       "chart_data_mb": round(size(charts) / 2**20, 2), "largest_chart_mb": round(max((c.stat().st_size for c in charts), default=0) / 2**20, 2)}
    return {"total_mb": round(size(p for p in site.rglob("*") if p.is_file()) / 2**20, 1), "assets_mb": round(assets / 2**20, 2),
            "media_mb": round(size(p for p in (site / "media").rglob("*") if p.is_file()) / 2**20, 1), "pages": pages}


def browse(site: Path, pages: tuple[str, ...] = PAGES, max_charts: int | None = None) -> dict:
    from playwright.sync_api import Error as PlaywrightError

    from millivid_dashboards.browser import chromium, inspect_page

    out = {}
    with chromium() as browser:
        for page in pages:
            try:
                report = inspect_page(browser, site / page, timeout_ms=BROWSER_TIMEOUT_MS, max_charts=max_charts)
            except PlaywrightError as err:  # too slow is a result too
                out[page] = {"error": str(err).splitlines()[0]}
                continue
            durations = list(report.video_durations.values())
            out[page] = {"load_ms": round(report.load_ms), "all_charts_drawn_ms": round(report.drawn_ms),
                         "charts_drawn": len(report.charts), "blank_charts": len(report.blank_charts), "errors": report.errors[:3],
                         "videos": len(durations), "min_video_s": min(durations, default=None)}
        out["chromium"] = browser.version
    return out


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
