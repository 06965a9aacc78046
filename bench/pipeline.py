"""Orchestration overhead of the smoke pipeline and the wall time of a fully cached rerun.

Runs in a fresh temporary workspace (embedded stack: ephemeral Prefect, SQLite MLflow, local Ray).
Overhead = wall time of the flow call minus the time spent inside stage bodies (the work itself,
including Ray Train's start-up inside training stages). Goals: overhead < 15 s, cached rerun < 10 s.
"""

from __future__ import annotations

import os
import tempfile
import time


def run(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="millivid-bench-") as folder:
        os.environ["MILLIVID_WORKSPACE"] = os.path.join(folder, "workspace")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from millivid_platform.compute import ensure_ray
        from millivid_platform.settings import load_settings

        settings = load_settings()
        settings.export_environment()
        started = time.perf_counter()
        ensure_ray(settings)
        ray_start = time.perf_counter() - started

        from millivid_flows.pipeline import pipeline
        from millivid_platform.pipeline import PipelineParams
        from millivid_platform.report_stage import flatten

        overrides = ["autoencoder.train.steps=4", "diffusion.train.steps=4"] if quick else []
        started = time.perf_counter()
        first = pipeline(PipelineParams(preset="smoke", overrides=overrides))
        wall = time.perf_counter() - started
        inside = sum(row.seconds for row in flatten(first))

        started = time.perf_counter()
        second = pipeline(PipelineParams(preset="smoke", overrides=overrides))
        cached_wall = time.perf_counter() - started
        cached = sum(row.cached for row in flatten(second))
    return {
        "benchmark": "pipeline",
        "preset": "smoke" + (" (quick: 4 training steps)" if quick else ""),
        "ray_start_s": round(ray_start, 2),
        "wall_s": round(wall, 2),
        "stage_body_s": round(inside, 2),
        "orchestration_overhead_s": round(wall - inside, 2),
        "cached_rerun_s": round(cached_wall, 2),
        "cached_stages": cached,
        "goals": {"orchestration_overhead_s": 15, "cached_rerun_s": 10},
    }
