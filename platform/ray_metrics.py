"""Training progress as Ray application metrics, which Ray's metrics agent exports to Prometheus
(prefixed `ray_`): the Grafana dashboard in dashboards/grafana/ charts training throughput from them.

    record_progress("diffusion:millivid", step=200, total=1500, metrics={"train/steps_per_s": 3.1, ...}, batch_size=8)

Called on rank 0 at each log step. Outside a Ray worker (no Ray) it does nothing.
"""

from __future__ import annotations

import functools
from typing import Any

TAG_KEYS = ("stage",)
GAUGES = {  # key -> (metric name, description)
    "progress": ("millivid_train_progress", "share of the stage's optimizer steps done (0..1)"),
    "steps_per_s": ("millivid_train_steps_per_second", "optimizer steps per second since this invocation started"),
    "examples_per_s": ("millivid_train_examples_per_second", "training examples per second, all workers together"),
    "loss": ("millivid_train_loss", "training loss averaged over the last log window"),
}


@functools.cache
def gauges() -> dict[str, Any]:
    from ray.util.metrics import Gauge

    return {key: Gauge(name, description, TAG_KEYS) for key, (name, description) in GAUGES.items()}


def record_progress(stage: str, step: int, total: int, metrics: dict[str, float], batch_size: int) -> None:
    import ray

    if not ray.is_initialized():
        return
    tags = {"stage": stage}
    found = gauges()
    steps_per_s = metrics.get("train/steps_per_s", 0.0)
    found["progress"].set(step / total, tags)
    found["steps_per_s"].set(steps_per_s, tags)
    found["examples_per_s"].set(steps_per_s * batch_size, tags)  # batch_size: examples per step, summed over workers
    if "train/loss" in metrics:
        found["loss"].set(metrics["train/loss"], tags)
