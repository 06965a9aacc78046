"""The nightly regression flow: evaluate the current code and gate it against the baseline run."""

from __future__ import annotations

import logging
from typing import Any, Literal

from prefect import flow
from prefect.states import Failed, State
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from millivid_dashboards import report_stage
from millivid_flows import run_page
from millivid_flows.pipeline import run_label, run_until
from millivid_platform import regression
from millivid_platform.pipeline import CheckedCopies, Override, PipelineParams
from millivid_platform.settings import load_settings


class RegressionParams(CheckedCopies):
    """The preset's fixed test examples and seeds, evaluated with the current code and compared with the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["smoke", "cpu", "paper"] = "smoke"
    overrides: list[Override] = Field(
        default_factory=list, description="settings that differ from the preset, one KEY=VALUE each; keep them the same from night to night",
    )
    tolerances: regression.Tolerances = regression.Tolerances()
    baseline_group: str | None = Field(None, description="the baseline to compare with (default: the configuration's name)")
    _pipeline: PipelineParams = PrivateAttr()

    @model_validator(mode="after")
    def _resolves(self) -> RegressionParams:
        if getattr(self, "_pipeline", None) is None:  # once per object: Prefect validates the object it is given again
            self._pipeline = PipelineParams(preset=self.preset, overrides=self.overrides)  # a bad override fails here
        return self

    @property
    def pipeline(self) -> PipelineParams:
        return self._pipeline

    @property
    def label(self) -> str:
        return self.pipeline.label


log = logging.getLogger(__name__)

DEFAULT_REGRESSION = RegressionParams()


@flow(name="nightly-regression", flow_run_name=run_label, log_prints=True)
def nightly_regression(params: RegressionParams = DEFAULT_REGRESSION) -> dict[str, Any] | State:
    """Evaluate the current code on the fixed test examples and compare it with the baseline, metric
    by metric; fails when a metric is worse than the baseline beyond its tolerance."""
    settings = load_settings()
    with run_page.project_logs_in_flow_run():
        results = run_until(params.pipeline, "evaluate", "nightly-regression")
        run_page.publish_pipeline_summary(settings, "nightly-regression", params.label, results)
        verdict = regression.gate(results, params.tolerances, params.baseline_group)
        run_page.publish_regression_table(settings, results["experiment_id"], verdict)
        # the night's comparison site beside its baseline, also (above all) when the gate fails
        report_stage.publish_site(settings, results["pipeline_run_id"], results["config_name"])
        log.info("nightly regression: %s: %s", verdict["status"], verdict["message"])
    if verdict["status"] == "failed":
        # an expected outcome, not a crash: the run ends Failed with the comparison as its message and
        # no traceback; called as a function, the flow raises RegressionError
        return Failed(message=f"regression: {verdict['message']}", data=regression.RegressionError(verdict["message"]))
    return verdict
