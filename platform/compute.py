"""Every Ray call of the platform: connect or start a cluster, run Ray Train jobs, map tasks.

Local by default (`ray.init(num_cpus=N)`); `RAY_ADDRESS` points the same code at a cluster.
Ray replaces process signal handlers (Prefect's SIGTERM, TorchTrainer's SIGINT): every entry
here restores them, so a cancelled flow run still stops cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import Any

from millivid.schema import ComputeConfig
from millivid_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def preserved_signal_handlers() -> Iterator[None]:
    saved = {}
    for sig in _HANDLED_SIGNALS:
        with contextlib.suppress(ValueError):  # only the main thread may read/set handlers
            saved[sig] = signal.getsignal(sig)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)


def worker_env() -> dict[str, str]:
    """Environment every Ray worker gets: tracking URI and thread settings travel explicitly."""
    import os

    env = {}
    for key in ("MLFLOW_TRACKING_URI", "MILLIVID_WORKSPACE", "MILLIVID_STORAGE_ROOT"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def ensure_ray(settings: PlatformSettings) -> dict[str, Any]:
    """Connect to `settings.ray_address` or start a local Ray with an explicit CPU count."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    with preserved_signal_handlers():
        kwargs: dict[str, Any] = {
            "runtime_env": {"env_vars": worker_env()},
            "logging_level": logging.WARNING,
            "configure_logging": True,
        }
        if settings.uses_local_ray:
            # "local" starts a new cluster; a bare ray.init() would attach to any cluster it finds.
            ray.init(address="local", num_cpus=settings.num_cpus, include_dashboard=False, **kwargs)
        else:
            ray.init(address=settings.ray_address, **kwargs)
    resources = ray.cluster_resources()
    log.info("ray ready: %s", {k: v for k, v in resources.items() if k in ("CPU", "GPU")})
    return resources


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def pyarrow_filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem over any fsspec URI, for Ray Train's `storage_path`."""
    import pyarrow.fs

    from millivid.storage import filesystem

    fs, path = filesystem(uri)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def fit_torch(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    compute: ComputeConfig,
    storage_uri: str,
    name: str,
    max_failures: int = 0,
) -> Any:
    """Run `loop` on Ray Train workers (gloo on CPU, nccl on GPU); returns the Ray Train result.

    `storage_uri`/`name` is where Ray keeps checkpoints: rerunning with the same pair resumes.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    filesystem, path = pyarrow_filesystem(storage_uri)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if compute.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=compute.workers,
            use_gpu=compute.use_gpu,
            resources_per_worker={"CPU": compute.cpus_per_worker, **({"GPU": 1} if compute.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    with preserved_signal_handlers():
        return trainer.fit()


def map_tasks(fn: Callable[..., Any], items: list[Any], num_cpus: float = 1.0) -> list[Any]:
    """Run `fn(item)` for every item as Ray tasks; results in the order of `items`."""
    import ray

    remote = ray.remote(num_cpus=num_cpus)(fn)
    return ray.get([remote.remote(item) for item in items])
