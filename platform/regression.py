"""Nightly regression gates: compare an evaluation with the baseline run, metric by metric.

Both evaluations use the same protocol (examples, seeds), so the comparison is paired: per
method and metric, the per-example difference over the last half of the rollout, oriented so
that positive means worse, with a bootstrap 95% interval. A metric regresses when its interval
lies above zero AND its mean is worse than the configured tolerance.

    millivid baseline promote RUN_ID      # mark an evaluate run as the baseline of its config
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from millivid import storage
from millivid.eval.stats import bootstrap_mean
from millivid.eval.tables import read_parquet
from millivid_platform import caching
from millivid_platform.settings import PlatformSettings

TAG_BASELINE = "millivid.baseline"
TAG_BASELINE_GROUP = "millivid.baseline_group"
TAG_BASELINE_SINCE = "millivid.baseline_since"  # when it was promoted (ISO 8601, UTC)
TAG_REGRESSION = "millivid.regression"
HIGHER_IS_BETTER = {"lpips": False, "psnr": True, "ssim": True}


class RegressionError(RuntimeError):
    """The evaluation is worse than the baseline beyond tolerance (fails the flow run)."""


class Tolerances(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lpips: float = Field(0.01, ge=0, description="allowed LPIPS increase (absolute)")
    psnr: float = Field(0.5, ge=0, description="allowed PSNR drop (dB)")
    ssim: float = Field(0.01, ge=0, description="allowed SSIM drop (absolute)")


@dataclass(frozen=True)
class MetricComparison:
    method: str
    metric: str
    baseline: float
    current: float
    worse_by: float  # mean of (current - baseline), oriented so that positive is worse
    ci_low: float
    ci_high: float
    tolerance: float
    examples: int

    @property
    def regressed(self) -> bool:
        return self.ci_low > 0 and self.worse_by > self.tolerance


def last_half_means(rows: pa.Table, method: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(example ids, per-example mean of `metric` over the last half of the rollout)."""
    table = rows.filter(pc.equal(rows["method"], method))
    frames = pc.max(table["frame"]).as_py() + 1
    table = table.filter(pc.greater_equal(table["frame"], frames - frames // 2))
    grouped = table.group_by("example").aggregate([(metric, "mean")]).sort_by("example")
    return grouped["example"].to_numpy(), grouped[f"{metric}_mean"].to_numpy()


def compare(baseline: pa.Table, current: pa.Table, tolerances: Tolerances, resamples: int = 1000,
            seed: int = 0) -> list[MetricComparison]:
    methods = sorted(set(baseline["method"].to_pylist()) & set(current["method"].to_pylist()))
    results = []
    for method in methods:
        for metric, higher_better in HIGHER_IS_BETTER.items():
            base_ids, base = last_half_means(baseline, method, metric)
            ids, values = last_half_means(current, method, metric)
            if not np.array_equal(base_ids, ids):
                raise ValueError(f"{method}: baseline and current evaluations use different examples "
                                 f"({base_ids.tolist()} vs {ids.tolist()}); compare runs of the same protocol")
            worse = (base - values) if higher_better else (values - base)
            interval = bootstrap_mean(worse, resamples, seed).at(0)
            results.append(MetricComparison(
                method, metric, float(np.nanmean(base)), float(np.nanmean(values)), float(interval["mean"] or 0.0),
                float(interval["ci_low"] or 0.0), float(interval["ci_high"] or 0.0),
                getattr(tolerances, metric), int(interval["examples"]),
            ))
    return results


def comparison_table(results: list[MetricComparison]) -> bytes:
    """The comparison as Parquet bytes (one row per method and metric)."""
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{**asdict(r), "regressed": r.regressed} for r in results])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def comparison_plot(results: list[MetricComparison]) -> bytes:
    """Bar per (method, metric): how much worse than baseline, with its CI and the tolerance."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = list(HIGHER_IS_BETTER)
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        rows = [r for r in results if r.metric == metric]
        names = [r.method for r in rows]
        worse = np.array([r.worse_by for r in rows])
        errors = np.array([[r.worse_by - r.ci_low for r in rows], [r.ci_high - r.worse_by for r in rows]])
        colours = ["tab:red" if r.regressed else "tab:green" for r in rows]
        axis.bar(names, worse, yerr=errors, color=colours, capsize=4)
        if rows:
            axis.axhline(rows[0].tolerance, color="k", linestyle="--", linewidth=1, label="tolerance")
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_title(f"{metric}: worse than baseline by")
        axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def baseline_run(experiment_id: str, group: str):
    """The evaluate run marked as baseline for `group` (the config name), or None."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_BASELINE}` = 'true' and tags.`{TAG_BASELINE_GROUP}` = '{group}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def promote(run_id: str, group: str | None = None) -> tuple[str, str]:
    """Mark an evaluate stage run (or the one inside a pipeline run) as its group's baseline.

    Returns (group, evaluate run id)."""
    import mlflow

    client = mlflow.MlflowClient()
    run = evaluate_child(run_id)
    run_id = run.info.run_id
    group = group or run.data.tags.get("millivid.config_name") or "default"
    previous = baseline_run(run.info.experiment_id, group)
    if previous is not None and previous.info.run_id != run_id:
        client.set_tag(previous.info.run_id, TAG_BASELINE, "false")
    client.set_tag(run_id, TAG_BASELINE, "true")
    client.set_tag(run_id, TAG_BASELINE_GROUP, group)
    client.set_tag(run_id, TAG_BASELINE_SINCE, datetime.now(UTC).isoformat(timespec="seconds"))
    return group, run_id


def describe_baseline(settings: PlatformSettings, run: Any) -> dict[str, Any]:
    """What `millivid baseline show` prints: when, which numbers, and where to look."""
    import mlflow

    from millivid_platform import tracking

    def iso(milliseconds: int | None) -> str | None:
        return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")

    tags = run.data.tags
    # a cached evaluate run points at the run that computed its numbers
    source = tags.get(caching.TAG_CACHED_FROM)
    measured = run if source is None else mlflow.MlflowClient().get_run(source)
    return {
        "group": tags.get(TAG_BASELINE_GROUP),
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "promoted_at": tags.get(TAG_BASELINE_SINCE),
        "evaluated_at": iso(measured.info.end_time or measured.info.start_time),
        "git_commit": tags.get(tracking.TAG_GIT_COMMIT),
        "link": tracking.run_url(settings, run.info.experiment_id, run.info.run_id),
        # the evaluation's summary numbers (per method and reference line), not its per-frame curves
        "metrics": {key.removeprefix("summary/"): value for key, value in sorted(measured.data.metrics.items())
                    if key.startswith("summary/")},
        "outputs": caching.outputs_of(run),
    }


def evaluation_rows(outputs: dict[str, str]) -> pa.Table:
    return read_parquet(storage.join(outputs["evaluation_uri"], "rows.parquet"))


def summary_json(results: list[MetricComparison]) -> str:
    return json.dumps([{**asdict(r), "regressed": r.regressed} for r in results], indent=2)


def evaluate_child(run_id: str):
    """`run_id` itself when it has evaluation outputs, else its nested `evaluate` stage run."""
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if "evaluation_uri" in caching.outputs_of(run):
        return run
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`millivid.stage` = 'evaluate'",
        max_results=1,
    )
    if not children:
        raise ValueError(f"run {run_id} is neither an evaluate stage run nor a pipeline run with one")
    return children[0]


def gate(results: dict, tolerances: Tolerances, group: str | None = None) -> dict:
    """Compare the pipeline's evaluation with its group's baseline; tag and annotate the pipeline run."""
    from millivid_platform import tracking

    evaluation, parent = results["evaluate"], results["pipeline_run_id"]
    group = group or results["config_name"]
    import mlflow

    experiment_id = mlflow.MlflowClient().get_run(parent).info.experiment_id
    baseline = baseline_run(experiment_id, group)
    if baseline is None:
        message = f"no baseline for '{group}' yet: promote one with `millivid baseline promote {evaluation.run_id}`"
        tracking.set_tags({TAG_REGRESSION: "no-baseline"}, parent)
        return {"status": "no-baseline", "message": message, "group": group, "evaluation_run": evaluation.run_id}
    results_ = compare(evaluation_rows(caching.outputs_of(baseline)), evaluation_rows(evaluation.outputs), tolerances)
    regressed = [r for r in results_ if r.regressed]
    status = "failed" if regressed else "passed"
    tracking.log_artifact_bytes(comparison_table(results_), "regression/comparison.parquet", parent)
    tracking.log_artifact_bytes(summary_json(results_).encode(), "regression/comparison.json", parent)
    tracking.log_artifact_bytes(comparison_plot(results_), "regression/comparison.png", parent)
    tracking.set_tags({TAG_REGRESSION: status, "millivid.regression_baseline": baseline.info.run_id}, parent)
    for r in results_:
        tracking.log_metrics({f"regression/{r.method}/{r.metric}_worse_by": r.worse_by}, step=0, run_id=parent)
    message = "; ".join(f"{r.method} {r.metric} worse by {r.worse_by:.4g} (95% CI {r.ci_low:.4g}..{r.ci_high:.4g}, "
                        f"tolerance {r.tolerance})" for r in regressed) or "no metric worse than tolerance"
    return {"status": status, "message": message, "group": group, "baseline_run": baseline.info.run_id,
            "evaluation_run": evaluation.run_id, "comparisons": json.loads(summary_json(results_))}
