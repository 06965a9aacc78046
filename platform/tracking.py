"""Every MLflow call of the platform: experiment set-up, runs, lineage tags, logging.

MLflow is imported lazily so that `millivid --help` and config validation stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from millivid.config import canonical_json, config_hash
from millivid_platform.settings import PlatformSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY_PACKAGES = ("millivid", "torch", "ray", "prefect", "mlflow", "lpips", "einops", "pyarrow", "fsspec", "pydantic")

TAG_STAGE = "millivid.stage"
TAG_CONFIG_HASH = "millivid.config_hash"
TAG_CACHE_KEY = "millivid.cache_key"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO = "mlflow.source.git.repoURL"
TAG_GIT_DIRTY = "millivid.git_dirty"
# What MLflow's run pages and runs table show as "Source" (and beside it, as "Version", the commit)
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"


def configure(settings: PlatformSettings) -> str:
    """Point MLflow at the settings' store and make sure the experiment exists; returns its id."""
    import mlflow

    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    with settings.setup_lock():  # the first query creates and migrates an embedded database
        experiment = mlflow.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # A server chooses its own artifact store; a database URI gets the workspace's (MLflow's
            # default would be ./mlruns under whatever folder the process runs in).
            embedded = not settings.resolved_tracking_uri.startswith(("http://", "https://", "databricks"))
            location = settings.artifact_root if embedded else None
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # another machine's creator won
                mlflow.create_experiment(settings.experiment, artifact_location=location)
            experiment_id = mlflow.get_experiment_by_name(settings.experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@functools.cache
def git_state() -> dict[str, str]:
    """The repository's HEAD commit, branch and remote, and whether the work tree has uncommitted changes.

    Set explicitly: MLflow fills these in only when `__main__` is a script inside the repository.
    """
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        state = {TAG_GIT_COMMIT: git("rev-parse", "HEAD"), TAG_GIT_BRANCH: git("rev-parse", "--abbrev-ref", "HEAD"),
                 TAG_GIT_DIRTY: str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {TAG_GIT_COMMIT: "unknown", TAG_GIT_DIRTY: "false"}
    with contextlib.suppress(subprocess.SubprocessError):  # a clone without a remote has none
        state[TAG_GIT_REPO] = re.sub(r"//[^/@]+@", "//", git("remote", "get-url", "origin"))  # no credentials
    return state


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lineage_tags(stage: str, config: Any | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags every run carries: stage, git commit, branch and remote (set explicitly), config hash, package versions."""
    tags = {TAG_STAGE: stage, **git_state()}
    tags.update({f"millivid.version.{name}": version for name, version in package_versions().items()})
    if config is not None:
        tags[TAG_CONFIG_HASH] = config_hash(config)
    tags.update(extra or {})
    return tags


def create_run(
    experiment_id: str,
    name: str,
    stage: str,
    config: Any | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a run without making it active (Ray workers log into it by id); returns its id."""
    import mlflow

    all_tags = lineage_tags(stage, config, tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return mlflow.MlflowClient().create_run(experiment_id, tags=all_tags, run_name=name).info.run_id


def source_tags(name: str) -> dict[str, str]:
    """The run's "Source" in MLflow's UI: what ran it (a Prefect flow run is a job)."""
    return {TAG_SOURCE_NAME: name, TAG_SOURCE_TYPE: "JOB"}


def has_server(settings: PlatformSettings) -> bool:
    return settings.resolved_tracking_uri.startswith(("http://", "https://"))


def ui_url(settings: PlatformSettings) -> str:
    """Where MLflow's UI for these runs is: the tracking server, else what `millivid ui` serves."""
    if has_server(settings):
        return settings.resolved_tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{settings.stack_mlflow_port}"


def run_url(settings: PlatformSettings, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page in MLflow's UI, or one of its artifacts there."""
    page = f"{ui_url(settings)}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}/artifacts/{artifact}" if artifact else page


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return flat


def log_config(config: Any, run_id: str | None = None) -> None:
    """Log a config (a model, or a dict of models and values) as flattened params plus canonical JSON."""
    import mlflow
    from pydantic_core import to_jsonable_python

    client = mlflow.MlflowClient()
    target = run_id or mlflow.active_run().info.run_id
    tree = to_jsonable_python(config)
    params = [mlflow.entities.Param(key, value[:6000]) for key, value in flatten(tree).items()]
    for start in range(0, len(params), 100):
        client.log_batch(target, params=params[start : start + 100])
    client.log_text(target, canonical_json(tree), "config.json")


def log_metrics(metrics: Mapping[str, float], step: int, run_id: str | None = None) -> None:
    import mlflow

    clean = {key: float(value) for key, value in metrics.items()}
    if run_id:
        mlflow.MlflowClient().log_batch(
            run_id, metrics=[mlflow.entities.Metric(k, v, _now_ms(), step) for k, v in clean.items()]
        )
    else:
        mlflow.log_metrics(clean, step=step)


def log_artifact_bytes(data: bytes, artifact_path: str, run_id: str | None = None) -> None:
    """Log in-memory bytes as an artifact file at `artifact_path` (e.g. 'plots/loss.png')."""
    import mlflow

    folder, _, name = artifact_path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        local.write_bytes(data)
        if run_id:
            mlflow.MlflowClient().log_artifact(run_id, str(local), folder or None)
        else:
            mlflow.log_artifact(str(local), folder or None)


def log_artifact_file(path: str | Path, folder: str | None = None, run_id: str | None = None) -> None:
    import mlflow

    if run_id:
        mlflow.MlflowClient().log_artifact(run_id, str(path), folder)
    else:
        mlflow.log_artifact(str(path), folder)


def set_tags(tags: Mapping[str, str], run_id: str | None = None) -> None:
    import mlflow

    if run_id:
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        mlflow.set_tags(dict(tags))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_dataset(run_id: str, uri: str, name: str, digest: str, context: str) -> None:
    """Record a dataset (by URI and content digest) as an input of a run."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    try:
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
    except mlflow.exceptions.MlflowException:  # e.g. memory:// has no MLflow source type
        source = _fsspec_source(uri)
    dataset = MetaDataset(source, name=name, digest=digest[:36])
    mlflow.MlflowClient().log_inputs(
        run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])]
    )


def _fsspec_source(uri: str) -> Any:
    from mlflow.data.dataset_source import DatasetSource

    class FsspecDatasetSource(DatasetSource):
        def __init__(self, location: str):
            self.location = location

        @staticmethod
        def _get_source_type() -> str:
            return "fsspec"

        def load(self, **kwargs: Any) -> str:
            return self.location

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> FsspecDatasetSource:
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, str]:
            return {"uri": self.location}

        @classmethod
        def from_dict(cls, source_dict: dict[str, str]) -> FsspecDatasetSource:
            return cls(source_dict["uri"])

    return FsspecDatasetSource(uri)
