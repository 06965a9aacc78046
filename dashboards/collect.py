"""Pipeline runs as the site shows them, read from MLflow.

    runs = collect_runs(["<pipeline run id>", ...], cache_dir)     # list[PipelineRun]

A pipeline run is a parent MLflow run with one nested run per stage. A stage that was cached ran
nowhere this time: its nested run points (`millivid.cached_from`) at the run that did the work and
holds the artifacts, so every stage is recorded with both. Artifacts are downloaded once per
source run into `cache_dir`: runs that share a cached evaluation share its files.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_STAGE = "millivid.stage"
TAG_CACHED_FROM = "millivid.cached_from"
TAG_OUTPUTS = "millivid.outputs"
TAG_PARENT = "mlflow.parentRunId"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StageRecord:
    stage: str
    run_id: str  # the nested run under this pipeline run
    source_run_id: str  # the run that did the work and holds its artifacts (differs when cached)
    status: str
    seconds: float

    @property
    def cached(self) -> bool:
        return self.source_run_id != self.run_id


@dataclass(frozen=True)
class Evaluation:
    """The evaluation's artifacts (millivid.eval: summary.json, rows/curves/latent_memory Parquet,
    videos/*.mp4, strips/*.png), downloaded to `folder`."""

    source_run_id: str
    folder: Path
    summary: dict[str, Any]

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.exists() else None

    def videos(self) -> list[Path]:
        return sorted((self.folder / "videos").glob("*.mp4"))

    def strip(self, video: Path) -> Path | None:
        return self.file(f"strips/{video.stem}.png")


@dataclass(frozen=True)
class Reconstruction:
    """Per-level reconstruction quality of the autoencoder(s): `levels` as `millivid ae eval` writes
    them (level, tokens, one entry per variant, psnr_difference when two variants were compared)."""

    key: str  # the autoencoder runs it describes: runs sharing them share this
    variants: tuple[str, ...]
    levels: list[dict[str, Any]]
    figure: Path | None  # images decoded from each level (comparison figure or training reconstructions)


@dataclass
class PipelineRun:
    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    config: dict[str, Any] | None  # the resolved configuration (config.json)
    stages: dict[str, StageRecord]
    metrics: dict[str, dict[str, float]]  # stage -> latest value of each metric of its source run
    dataset: dict[str, str] = field(default_factory=dict)  # name, digest, source of the data stage's input
    evaluation: Evaluation | None = None
    reconstruction: Reconstruction | None = None
    baseline: bool = False  # the baseline of the nightly regression gate for its config
    label: str = field(default="")

    def __post_init__(self) -> None:
        self.label = self.label or f"{self.name} · {self.run_id[:7]}"


def collect_runs(run_ids: list[str], cache_dir: Path, baseline_ids: frozenset[str] = frozenset()) -> list[PipelineRun]:
    """Pipeline runs in the given order; an id of a stage run stands for its pipeline run."""
    import mlflow

    client = mlflow.MlflowClient()
    parents = list(dict.fromkeys(pipeline_run_id(client, run_id) for run_id in run_ids))
    return [collect_run(client, run_id, cache_dir, run_id in baseline_ids) for run_id in parents]


def pipeline_run_id(client: Any, run_id: str) -> str:
    """A stage run's parent pipeline run; a pipeline run itself."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"{run_id!r} is not an MLflow run id (32 hex digits)")
    run = client.get_run(run_id)
    return run.data.tags.get(TAG_PARENT) or run_id


def collect_run(client: Any, run_id: str, cache_dir: Path, baseline: bool = False) -> PipelineRun:
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{run_id}'",
                                  order_by=["attributes.start_time ASC"])
    stages = {child.data.tags.get(TAG_STAGE, child.info.run_name): stage_record(child) for child in children}
    metrics = {stage: client.get_run(record.source_run_id).data.metrics for stage, record in stages.items()}
    run = PipelineRun(
        run_id=run_id, experiment_id=parent.info.experiment_id, name=parent.info.run_name, status=parent.info.status,
        start_time=parent.info.start_time, tags=dict(parent.data.tags), config=load_config(run_id),
        stages=stages, metrics=metrics, baseline=baseline,
    )
    if "data" in stages:
        run.dataset = dataset_input(client, stages["data"].source_run_id)
    if "evaluate" in stages:
        run.evaluation = download_evaluation(stages["evaluate"].source_run_id, cache_dir)
    if "autoencoder" in stages:
        run.reconstruction = reconstruction(client, stages, metrics["autoencoder"], run.config, cache_dir)
    return run


def stage_record(child: Any) -> StageRecord:
    tags = child.data.tags
    seconds = child.data.metrics.get("stage/body_seconds", 0.0)
    return StageRecord(tags.get(TAG_STAGE, child.info.run_name), child.info.run_id,
                       tags.get(TAG_CACHED_FROM, child.info.run_id), child.info.status, seconds)


def dataset_input(client: Any, run_id: str) -> dict[str, str]:
    """The dataset the data stage recorded as its MLflow input."""
    inputs = client.get_run(run_id).inputs
    if inputs is None or not inputs.dataset_inputs:
        return {}
    dataset = inputs.dataset_inputs[0].dataset
    try:
        source = json.loads(dataset.source).get("uri", dataset.source)
    except json.JSONDecodeError:
        source = dataset.source
    return {"name": dataset.name, "digest": dataset.digest, "source": str(source)}


def load_config(run_id: str) -> dict[str, Any] | None:
    import mlflow

    try:
        return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/config.json"))
    except (mlflow.exceptions.MlflowException, OSError, json.JSONDecodeError) as err:
        log.warning("run %s: no readable config.json (%s)", run_id, err)
        return None


def download(run_id: str, artifact_path: str, cache_dir: Path) -> Path | None:
    """The artifact (file or folder) at cache_dir/<run id>/<artifact path>, downloaded once; None if
    the run has none."""
    import mlflow

    target = cache_dir / run_id / artifact_path
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # into the folder above: MLflow puts a file or folder there under its own name
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(target.parent)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def download_evaluation(run_id: str, cache_dir: Path) -> Evaluation | None:
    folder = download(run_id, "evaluation", cache_dir)
    if folder is None or not (folder / "summary.json").exists():
        return None
    return Evaluation(run_id, folder, json.loads((folder / "summary.json").read_text()))


def reconstruction(client: Any, stages: dict[str, StageRecord], metrics: dict[str, float], config: dict[str, Any] | None,
                   cache_dir: Path) -> Reconstruction | None:
    """Hierarchical vs downscaled from the comparison the autoencoder stage logs when both were trained
    (`comparison/levels.json`, on this pipeline's autoencoder run); otherwise the hierarchical model's
    own per-level evaluation from its training run."""
    record = stages["autoencoder"]
    downscaled = stages.get("autoencoder:downscaled")
    key = "+".join([record.source_run_id] + ([downscaled.source_run_id] if downscaled else []))
    for run_id in dict.fromkeys((record.run_id, record.source_run_id)):
        levels = download(run_id, "comparison/levels.json", cache_dir)
        if levels is not None:
            comparison = json.loads(levels.read_text())
            return Reconstruction(key, tuple(comparison["compared"]), comparison["levels"],
                                  download(run_id, "comparison/levels.png", cache_dir))
    tokens = tokens_per_level(config)
    if tokens is None or f"eval/psnr_level{len(tokens) - 1}" not in metrics:
        return None
    levels = [{"level": level, "tokens": count,
               "hierarchical": {metric: metrics.get(f"eval/{metric}_level{level}") for metric in ("psnr", "ssim", "lpips")}}
              for level, count in enumerate(tokens)]
    return Reconstruction(key, ("hierarchical",), levels, latest_reconstructions(client, record.source_run_id, cache_dir))


def tokens_per_level(config: dict[str, Any] | None) -> tuple[int, ...] | None:
    from millivid.geometry import LevelGeometry

    if config is None:
        return None
    model = config["autoencoder"]["model"]
    return LevelGeometry(config["data"]["size"], model["patch"], model["levels"]).tokens_per_level


def latest_reconstructions(client: Any, run_id: str, cache_dir: Path) -> Path | None:
    """The training run's last reconstruction grid (ground truth, then each level decoded)."""
    pictures = sorted(item.path for item in client.list_artifacts(run_id, "images") if "reconstructions" in item.path)
    return download(run_id, pictures[-1], cache_dir) if pictures else None


def latest_pipeline_runs(experiment_name: str, count: int) -> list[str]:
    """The most recent finished pipeline runs of an experiment, newest first."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r}")
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], f"tags.`{TAG_STAGE}` = 'pipeline' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=count,
    )
    return [run.info.run_id for run in runs]


def baseline_pipeline_run(experiment_id: str, group: str) -> str | None:
    """The pipeline run whose evaluation is the regression baseline of `group` (a config name)."""
    import mlflow

    from millivid_platform.regression import baseline_run

    evaluation = baseline_run(experiment_id, group)
    if evaluation is None:
        return None
    return mlflow.MlflowClient().get_run(evaluation.info.run_id).data.tags.get(TAG_PARENT) or evaluation.info.run_id
