"""The nightly regression flow: evaluate the current code and gate it against the baseline run."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from millivid_flows.pipeline import run_until
from millivid_platform import regression
from millivid_platform.pipeline import PipelineParams


class RegressionParams(BaseModel):
    """A fixed test set and seeds: the preset's evaluation protocol, unchanged from night to night."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["smoke", "cpu", "paper"] = "smoke"
    overrides: list[str] = Field(default_factory=list, description="dotted overrides (keep them fixed between nights)")
    tolerances: regression.Tolerances = regression.Tolerances()
    baseline_group: str | None = Field(None, description="baseline to compare with (default: the config's name)")


DEFAULT_REGRESSION = RegressionParams()


@flow(name="nightly-regression", log_prints=True)
def nightly_regression(params: RegressionParams = DEFAULT_REGRESSION) -> dict[str, Any]:
    """Fails (and tags the MLflow run) when a metric is worse than the baseline beyond tolerance."""
    results = run_until(PipelineParams(preset=params.preset, overrides=params.overrides), "evaluate", "nightly-regression")
    verdict = regression.gate(results, params.tolerances, params.baseline_group)
    get_run_logger().info("nightly regression: %s", verdict["status"])
    if verdict["status"] == "failed":
        raise regression.RegressionError(verdict["message"])
    return verdict
