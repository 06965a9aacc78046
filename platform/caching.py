"""Stage caching: a stage whose inputs match a finished MLflow run is skipped and its outputs reused.

A stage's cache key hashes its config slice, the content hashes of its upstream artifacts and
the version of the code it runs (a hash of that code's source files). Outputs live at
content-addressed URIs derived from the key, and a per-key lock keeps two pipelines from
writing the same outputs at once: the second waits, then reuses the first one's result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

REPO_ROOT = Path(__file__).resolve().parent.parent

# The source each stage's outputs depend on (relative to the repository). Shared modules are
# listed where they change a stage's results; platform code only moves results around.
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "data": ("millivid/world", "millivid/data", "millivid/storage.py", "millivid/schema.py"),
    "autoencoder": ("millivid/ae", "millivid/perceptual.py", "millivid/metrics.py", "millivid/training.py",
                    "millivid/geometry.py", "millivid/data"),
    "encode": ("millivid/ae", "millivid/data", "millivid/geometry.py"),
    "diffusion": ("millivid/diffusion", "millivid/training.py", "millivid/geometry.py", "millivid/data"),
    "evaluate": ("millivid/eval", "millivid/diffusion", "millivid/ae", "millivid/perceptual.py",
                 "millivid/metrics.py", "millivid/video.py", "millivid/data"),
    "report": ("dashboards",),
}

TAG_CACHE_KEY = "millivid.cache_key"
TAG_OUTPUTS = "millivid.outputs"
TAG_CACHED_FROM = "millivid.cached_from"


@functools.cache
def code_version(stage: str) -> str:
    """Hash of the science source files the stage's results depend on."""
    digest = hashlib.sha256()
    for entry in STAGE_SOURCES[stage]:
        path = REPO_ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(stage: str, config: Any, upstream: Mapping[str, str]) -> str:
    """Key of a stage run: its config slice, upstream artifact hashes and code version."""
    payload = {
        "stage": stage,
        "config": to_jsonable_python(config),
        "upstream": dict(sorted(upstream.items())),
        "code": code_version(stage.split(":")[0]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def finished_run(experiment_id: str, key: str) -> Any | None:
    """The most recent finished run that produced `key` (not a cached stand-in), or None."""
    return latest_run(experiment_id, key, "attributes.status = 'FINISHED'")


def unfinished_run(experiment_id: str, key: str) -> Any | None:
    """An interrupted run of `key` (killed, failed, or left running by a dead process), not a stand-in."""
    return latest_run(experiment_id, key, "attributes.status != 'FINISHED'")


def latest_run(experiment_id: str, key: str, status: str) -> Any | None:
    """The most recent run of cache key `key` whose status matches the `status` filter clause.

    The cached stand-ins carry the key too, and every cached rerun adds one: only the query can skip them all.
    """
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_CACHE_KEY}` = '{key}' and {status} and tags.`{TAG_CACHED_FROM}` IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def outputs_of(run: Any) -> dict[str, str]:
    return json.loads(run.data.tags.get(TAG_OUTPUTS, "{}"))


@contextlib.contextmanager
def stage_lock(lock_dir: Path, key: str, timeout: float = 24 * 3600) -> Iterator[None]:
    """Exclusive hold on one cache key across processes on this machine."""
    from filelock import FileLock

    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{key}.lock"), timeout=timeout):
        yield
