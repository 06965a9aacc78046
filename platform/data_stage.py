"""Pipeline stage `data`: render the built-in world or import episodes; log manifest, preview, input."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from millivid import storage
from millivid.data.columns import DataError
from millivid.data.config import DataConfig
from millivid.data.generate import render_dataset
from millivid.data.importers import import_dataset
from millivid.data.manifest import MANIFEST_NAME
from millivid.data.preview import preview
from millivid_platform import tracking
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage

log = logging.getLogger(__name__)


def run(ctx: PipelineContext, cfg: DataConfig) -> StageResult:
    return run_stage(ctx, "data", cfg, upstream={"import_uri": cfg.import_uri or ""}, body=lambda run: prepare(run, cfg))


def prepare(run: StageRun, cfg: DataConfig) -> dict[str, str]:
    uri = run.output_uri("dataset")
    progress = progress_logger("data")
    if cfg.source == "world":
        manifest = render_dataset(cfg, uri, progress)
    else:
        manifest = import_dataset(cfg.import_uri, uri, size=cfg.size, split=cfg.split,
                                  shard_frames=cfg.shard_frames, progress=progress)
    manifest_uri = storage.join(uri, MANIFEST_NAME)
    digest = storage.sha256(manifest_uri)
    tracking.log_artifact_bytes(storage.read_bytes(manifest_uri), f"dataset/{MANIFEST_NAME}", run.run_id)
    with tempfile.TemporaryDirectory() as folder:
        for name in ("preview.png", "preview.gif", "path.png") if manifest.pose_known else ("preview.png", "preview.gif"):
            try:
                preview(uri, str(Path(folder) / name))
            except DataError as err:
                if name != "path.png":
                    raise
                log.warning("data: no %s: %s", name, err)  # the previewed episode was imported without poses
                continue
            tracking.log_artifact_file(Path(folder) / name, "dataset", run.run_id)
    tracking.log_dataset(run.run_id, uri, name=f"{cfg.source}-{run.key}", digest=digest, context="training")
    tracking.log_metrics(
        {"data/episodes": manifest.counts["episodes"], "data/frames": manifest.frames, "data/bytes": manifest.bytes,
         **{f"data/episodes_{split}": manifest.counts[split] for split in ("train", "val", "test")}},
        step=0, run_id=run.run_id,
    )
    return {"dataset_uri": uri, "dataset_hash": digest}


def progress_logger(stage: str, every_fraction: float = 0.1):
    """A (done, total) callback that logs about every 10%."""
    last = [-1.0]

    def report(done: int, total: int) -> None:
        if done == total or done / total - last[0] >= every_fraction:
            last[0] = done / total
            log.info("%s: %d/%d (%.0f%%)", stage, done, total, 100 * done / total)

    return report
