"""Run one pipeline stage with lineage, caching, locking and resume.

    result = run_stage(ctx, "autoencoder", config_slice, upstream={"dataset": data_hash}, body=train)

`body(stage_run)` does the work, logs into `stage_run.run_id` and returns its outputs (URIs and
content hashes, strings only). A finished run with the same cache key short-circuits the body;
an interrupted one is resumed in place (same MLflow run, same checkpoint folder). A body that
stops at the pipeline's time limit raises `StagePaused`: its run is left KILLED and tagged
`millivid.paused`, which makes it an interrupted run that the next pipeline run resumes.
Ray starts only when a body that computes on it is about to run (not for `LOCAL_STAGES`): a
pipeline whose every stage is cached never starts it.

A context with `probe=True` asks the cache without doing or recording anything: `run_stage` returns
the finished run's result (the keys computed exactly as for a real run) or raises `CacheMiss`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from millivid import storage
from millivid.config import ExperimentConfig, canonical_json
from millivid_platform import caching, object_store, tracking
from millivid_platform.compute import ensure_ray
from millivid_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

TAG_CONFIG_NAME = "millivid.config_name"
TAG_PAUSED = "millivid.paused"
TAG_PAUSED_AT = "millivid.paused_at"

# Stage families whose bodies run in this process only (rendering, encoding, the report site): a
# run that redoes only these starts no Ray. Any other stage gets Ray before its body runs.
LOCAL_STAGES = frozenset({"data", "encode", "report"})


class CacheMiss(Exception):
    """A probe met a stage that would run: not cached, forced, or interrupted and to be resumed."""


class StagePaused(Exception):
    """A stage stopped at the pipeline's time limit with its progress saved; rerunning continues it."""

    def __init__(self, stage: str, step: int, total: int):
        super().__init__(stage, step, total)  # the constructor's arguments, so that it pickles
        self.stage, self.step, self.total = stage, step, total

    def __str__(self) -> str:
        return f"{self.stage} at step {self.step}/{self.total}"


@dataclass(frozen=True)
class PipelineContext:
    settings: PlatformSettings
    experiment_id: str
    parent_run_id: str | None = None
    force: frozenset[str] = field(default_factory=frozenset)
    deadline: float | None = None  # time.time() at which training stages pause (the time limit)
    config: ExperimentConfig | None = None  # the pipeline's resolved config: every stage run shows it as params
    run_label: str = ""  # what the pipeline runs (preset and overrides): the runs' names end with it
    run_tags: dict[str, str] = field(default_factory=dict)  # tags every run of the pipeline carries
    probe: bool = False  # only ask the cache: run_stage records nothing and raises CacheMiss where work is due

    @property
    def config_name(self) -> str:
        """The config's name, which groups runs and baselines ("default" for a stage run on its own)."""
        return self.config.name if self.config is not None else "default"

    def forced(self, stage: str) -> bool:
        return stage in self.force or stage.split(":")[0] in self.force or "all" in self.force

    def run_name(self, stage: str) -> str:
        return f"{stage} · {self.run_label}" if self.run_label else stage

    def log_config(self, run_id: str, stage_config: Any) -> None:
        """The whole config as params (what differs between two runs of a stage shows in MLflow's
        compare view), the stage's own share of it (what its cache key hashes) as an artifact."""
        tracking.log_config(self.config if self.config is not None else stage_config, run_id)
        tracking.log_artifact_bytes(canonical_json(stage_config).encode(), "stage_config.json", run_id)


@dataclass(frozen=True)
class StageIdentity:
    """Which run of which stage: the stage's name (`diffusion:millivid`), its cache key, its MLflow run."""

    stage: str
    key: str
    run_id: str


@dataclass(frozen=True)
class StageRun(StageIdentity):
    """What a stage body gets: where to log and where to write."""

    settings: PlatformSettings
    attempt: str  # changes when a stage is forced, so forced training starts from scratch
    deadline: float | None = None  # the pipeline's: training pauses there (raises StagePaused)

    def output_uri(self, *parts: str) -> str:
        return storage.join(self.settings.resolved_storage_root, self.stage.replace(":", "-"), self.key, *parts)

    @property
    def checkpoint_root(self) -> str:
        return storage.join(self.settings.resolved_storage_root, "checkpoints")

    @property
    def checkpoint_name(self) -> str:
        return f"{self.stage.replace(':', '-')}-{self.key}-{self.attempt}"


@dataclass(frozen=True)
class StageResult(StageIdentity):
    """What a stage hands the next ones: its outputs (URIs and hashes), and whether it reused a run."""

    outputs: dict[str, str]
    cached: bool
    seconds: float  # time inside the stage body (0 when cached)


def run_stage(
    ctx: PipelineContext,
    stage: str,
    config: Any,
    upstream: dict[str, str],
    body: Callable[[StageRun], dict[str, str]],
) -> StageResult:
    key = caching.cache_key(stage, config, upstream)
    if ctx.probe:
        return probed(ctx, stage, key)
    with caching.stage_lock(ctx.settings.workspace / "locks", key):
        done = reusable_run(ctx, stage, key)
        if done is not None:
            return record_cached(ctx, stage, key, config, done)
        return execute(ctx, stage, key, config, upstream, body)


def reusable_run(ctx: PipelineContext, stage: str, key: str) -> Any | None:
    """The finished run of `key` whose outputs are still there, unless the stage is forced."""
    if ctx.forced(stage):
        return None
    done = caching.finished_run(ctx.experiment_id, key)
    return done if done is not None and outputs_exist(caching.outputs_of(done)) else None


def probed(ctx: PipelineContext, stage: str, key: str) -> StageResult:
    """What `run_stage` would reuse, read without the lock (a finished run never changes) and without
    recording a cached run; `run_id` is the reused run's own."""
    done = reusable_run(ctx, stage, key)
    if done is None:
        why = "forced" if ctx.forced(stage) else f"no finished run of cache key {key} with its outputs"
        raise CacheMiss(f"{stage}: {why}")
    log.info("%s: cached in run %s", stage, done.info.run_id)
    return StageResult(stage, key, done.info.run_id, caching.outputs_of(done), cached=True, seconds=0.0)


def execute(ctx: PipelineContext, stage: str, key: str, config: Any, upstream: dict[str, str],
            body: Callable[[StageRun], dict[str, str]]) -> StageResult:
    import mlflow

    if stage.split(":")[0] not in LOCAL_STAGES:
        ensure_ray(ctx.settings)  # before any run is recorded, so that a failed start leaves none
    client = mlflow.MlflowClient()
    interrupted = None if ctx.forced(stage) else caching.unfinished_run(ctx.experiment_id, key)
    if interrupted is not None:
        run_id = interrupted.info.run_id
        attempt = interrupted.data.tags.get("millivid.attempt", "0")
        log.info("%s: resuming interrupted run %s", stage, run_id)
        client.update_run(run_id, status="RUNNING")
        for tag in (TAG_PAUSED, TAG_PAUSED_AT):
            if tag in interrupted.data.tags:  # it is running again
                client.delete_tag(run_id, tag)
        if ctx.parent_run_id:
            client.set_tag(run_id, "mlflow.parentRunId", ctx.parent_run_id)
    else:
        attempt = str(int(time.time())) if ctx.forced(stage) else "0"
        tags = {**ctx.run_tags, caching.TAG_CACHE_KEY: key, "millivid.attempt": attempt,
                "millivid.upstream": json.dumps(upstream), TAG_CONFIG_NAME: ctx.config_name}
        run_id = tracking.create_run(ctx.experiment_id, ctx.run_name(stage), stage, config, ctx.parent_run_id, tags)
        ctx.log_config(run_id, config)
    log.info("%s: running; follow it in MLflow: %s", stage, tracking.run_url(ctx.settings, ctx.experiment_id, run_id))
    started = time.perf_counter()
    try:
        with object_store.diagnosed(ctx.settings.resolved_storage_root):
            outputs = body(StageRun(stage, key, run_id, ctx.settings, attempt, ctx.deadline))
    except StagePaused as paused:
        mark_paused(run_id, paused)
        raise
    except BaseException:
        client.set_terminated(run_id, "KILLED" if _interrupted() else "FAILED")
        raise
    seconds = time.perf_counter() - started
    client.set_tag(run_id, caching.TAG_OUTPUTS, json.dumps(outputs, sort_keys=True))
    client.log_metric(run_id, "stage/body_seconds", seconds)
    client.set_terminated(run_id, "FINISHED")
    return StageResult(stage, key, run_id, outputs, cached=False, seconds=seconds)


def mark_paused(run_id: str, paused: StagePaused) -> None:
    """Not FINISHED (so the next pipeline run resumes it), and tagged so that nobody mistakes it for a crash."""
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, TAG_PAUSED, "true")
    client.set_tag(run_id, TAG_PAUSED_AT, str(paused))
    client.set_terminated(run_id, "KILLED")


def record_cached(ctx: PipelineContext, stage: str, key: str, config: Any, source: Any) -> StageResult:
    """A small run under the pipeline that points at the run whose outputs are reused."""
    import mlflow

    outputs = caching.outputs_of(source)
    tags = {
        **ctx.run_tags,
        caching.TAG_CACHE_KEY: key,
        caching.TAG_CACHED_FROM: source.info.run_id,
        caching.TAG_OUTPUTS: json.dumps(outputs, sort_keys=True),
        TAG_CONFIG_NAME: ctx.config_name,
    }
    run_id = tracking.create_run(ctx.experiment_id, ctx.run_name(f"{stage} (cached)"), stage, config, ctx.parent_run_id, tags)
    ctx.log_config(run_id, config)
    mlflow.MlflowClient().set_terminated(run_id, "FINISHED")
    log.info("%s: cached, reusing run %s", stage, source.info.run_id)
    return StageResult(stage, key, run_id, outputs, cached=True, seconds=0.0)


def outputs_exist(outputs: dict[str, str]) -> bool:
    """Cached outputs count only if every URI they name is still there."""
    uris = [value for name, value in outputs.items() if name.endswith("_uri")]
    return all(storage.exists(uri) for uri in uris)


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], KeyboardInterrupt)
