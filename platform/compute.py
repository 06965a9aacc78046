"""Every Ray call of the platform: connect or start a cluster, run Ray Train jobs, map tasks.

Local by default (`ray.init(num_cpus=N)`); `RAY_ADDRESS` points the same code at a cluster.
A local cluster listens on 127.0.0.1 only (see `LOOPBACK_ONLY`).
Ray starts when the first stage that computes on it runs (`ensure_ray` in `stages.execute`), so a
pipeline whose stages are all cached never starts it. Ray replaces process signal handlers
(Prefect's SIGTERM, TorchTrainer's SIGINT): every entry here restores them, so a cancelled flow run
still stops cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from millivid.schema import ComputeConfig
from millivid_platform.object_store import WORKER_VARIABLES
from millivid_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Ray gives a node the host's outward address and binds the GCS, raylet, workers and drivers on
# every interface (0.0.0.0), its runtime-env agent on that address; `--node-ip-address 127.0.0.1`
# is turned back into the outward address. Its single-machine mode (the default on Windows and
# macOS, switched on here) keeps the node on 127.0.0.1, so every one of them binds there. Read
# when `ray` is first imported; a node in this mode cannot take other machines' nodes.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@contextlib.contextmanager
def preserved_signal_handlers() -> Iterator[None]:
    """Put back the SIGINT/SIGTERM handlers that the code inside replaces (`ray.init`, `TorchTrainer.fit`).

    Ray may start inside a running Prefect flow (at the first stage that computes), and Prefect's
    SIGTERM handler is what ends a cancelled flow run cleanly. Handlers belong to the main thread:
    elsewhere nothing can replace them, and nothing is saved.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in _HANDLED_SIGNALS} if in_main_thread else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: installed outside Python, so it cannot be set again from here
                signal.signal(sig, handler)


# How a worker reaches an MLflow server behind an authenticating proxy (MLflow's client reads them).
MLFLOW_CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                           "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_SERVER_CERT_PATH")


def worker_env() -> dict[str, str]:
    """Environment every Ray worker gets from the driver: where to track (and the credentials for it;
    rank 0 logs to MLflow itself), the workspace and storage root, and the object store's settings."""
    env = {}
    for key in (*MLFLOW_CLIENT_VARIABLES, "MILLIVID_WORKSPACE", "MILLIVID_STORAGE_ROOT", *WORKER_VARIABLES):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def ensure_ray(settings: PlatformSettings) -> dict[str, Any]:
    """Connect to `settings.ray_address` or start a local Ray with an explicit CPU count; returns the
    cluster's resources. Idempotent: every stage that runs calls it, and only the first one starts Ray."""
    if settings.uses_local_ray:
        for key, value in LOOPBACK_ONLY.items():
            os.environ.setdefault(key, value)  # before `import ray`, which reads it
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
) -> Any:
    """Run `loop` on Ray Train workers (gloo on CPU, nccl on GPU); returns the Ray Train result.

    `storage_uri`/`name` is where Ray keeps checkpoints: rerunning with the same pair resumes, and
    so does each of the `compute.max_failures` restarts after a worker dies.
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
            failure_config=FailureConfig(max_failures=compute.max_failures),
        ),
    )
    with preserved_signal_handlers():
        return trainer.fit()


def map_tasks(fn: Callable[..., Any], items: list[Any], num_cpus: float = 1.0) -> list[Any]:
    """Run `fn(item)` for every item as Ray tasks, spread over the cluster's nodes (Ray's default
    packs them onto the driver's node first); results in the order of `items`."""
    import ray

    remote = ray.remote(num_cpus=num_cpus, scheduling_strategy="SPREAD")(fn)
    return ray.get([remote.remote(item) for item in items])
