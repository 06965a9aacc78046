"""The pipeline end to end with real Prefect (test harness), MLflow (SQLite) and Ray (local)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import workspace_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = {"data", "autoencoder", "encode", "diffusion:millivid", "diffusion:full_res", "diffusion:framepack",
          "evaluate", "report"}


@pytest.fixture(scope="module")
def pipeline_workspace(tmp_path_factory, ray_session, prefect_harness):
    """A fresh workspace for the module (its first test runs every stage); later tests rely on what
    earlier runs cached."""
    with workspace_environment(tmp_path_factory.mktemp("pipeline") / "workspace") as folder:
        yield folder


def run_pipeline(overrides=(), force=(), until="report", return_state=False):
    from millivid_flows import pipeline as flows
    from millivid_platform.pipeline import PipelineParams

    flow = {"report": flows.pipeline, "evaluate": flows.evaluate, "autoencoder": flows.train_autoencoder, "data": flows.prepare_data}[until]
    return flow(PipelineParams(preset="smoke", overrides=list(overrides), force=list(force)), return_state=return_state)


def prefect_run_page(flow_run_id) -> tuple[str, list[str], dict[str, str]]:
    """What the Prefect UI shows of a flow run: its name, its log lines, its artifacts (key -> markdown)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs go to the API in batches
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(flow_run_id).name
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return name, [log.message for log in logs], {artifact.key: artifact.data for artifact in artifacts}


def nested_runs(parent_run_id: str) -> dict[str, object]:
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {run.data.tags["millivid.stage"]: run for run in children}


def test_smoke_pipeline_end_to_end(pipeline_workspace):
    import mlflow

    state = run_pipeline(return_state=True)
    results = state.result()
    parent = mlflow.MlflowClient().get_run(results["pipeline_run_id"])
    assert parent.info.status == "FINISHED"
    for tag in ("mlflow.source.git.commit", "mlflow.source.git.branch", "millivid.config_hash", "millivid.version.torch",
                "millivid.prefect_flow_run"):
        assert parent.data.tags[tag]
    children = nested_runs(results["pipeline_run_id"])
    assert set(children) == STAGES
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert all("millivid.cached_from" not in run.data.tags for run in children.values())

    # MLflow: names after what ran, the source MLflow shows, the whole config on every run, headline numbers on the parent
    assert parent.info.run_name == "pipeline · smoke"
    assert children["evaluate"].info.run_name == "evaluate · smoke"
    for run in (parent, *children.values()):
        assert run.data.tags["mlflow.source.name"] == "pipeline" and run.data.tags["mlflow.source.type"] == "JOB"
        assert {"eval.bootstrap", "data.size", "diffusion.train.steps", "autoencoder.model.width"} <= set(run.data.params)
    assert children["data"].data.params["eval.bootstrap"] == "50"  # the pipeline's config, not only the stage's share
    client = mlflow.MlflowClient()
    assert "stage_config.json" in {a.path for a in client.list_artifacts(children["data"].info.run_id)}
    for method in ("millivid", "full_res", "framepack"):
        assert {f"lpips_last_half/{method}", f"psnr_last_half/{method}", f"ssim_last_half/{method}"} <= set(parent.data.metrics)
    assert parent.data.metrics["headline_holds"] in (0.0, 1.0)
    assert results["metrics"] == {key: value for key, value in parent.data.metrics.items() if key in results["metrics"]}

    # Prefect: the flow run named after what it ran, the project's lines in its logs, a summary with MLflow links
    name, logs, artifacts = prefect_run_page(state.state_details.flow_run_id)
    assert name == "smoke"
    text = "\n".join(logs)
    assert "data: running; follow it in MLflow: http://127.0.0.1:" in text
    assert "autoencoder: done in" in text and f"/runs/{children['autoencoder'].info.run_id}" in text
    assert "evaluate: " in text and "pipeline smoke: config" in text
    summary = artifacts["pipeline-smoke-summary"]
    assert summary.startswith("# pipeline · smoke")
    assert all(f"/runs/{run.info.run_id})" in summary for run in children.values())
    assert "lpips_last_half" in summary and "| millivid |" in summary and "report" in summary
    # stages hand each other URIs under the storage root, and log what they made
    assert results["encode"].outputs["latents_uri"].startswith(str(pipeline_workspace))
    client = mlflow.MlflowClient()
    evaluate_artifacts = {a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "evaluation")}
    assert {"evaluation/summary.json", "evaluation/rows.parquet", "evaluation/plots"} <= evaluate_artifacts
    assert client.get_metric_history(children["evaluate"].info.run_id, "lpips/millivid")
    assert children["evaluate"].data.tags["millivid.headline"] in ("holds", "does not hold")
    assert "report/index.html" in {a.path for a in client.list_artifacts(results["pipeline_run_id"], "report")}  # the site
    assert children["data"].inputs.dataset_inputs  # the dataset is an MLflow input


def test_unchanged_rerun_skips_every_stage(pipeline_workspace):
    results = run_pipeline()
    children = nested_runs(results["pipeline_run_id"])
    assert set(children) == STAGES
    assert all("millivid.cached_from" in run.data.tags for run in children.values())


def test_changing_one_stage_reruns_it_and_later_stages_only(pipeline_workspace):
    results = run_pipeline(overrides=["eval.bootstrap=60"])
    children = nested_runs(results["pipeline_run_id"])
    rerun = {stage for stage, run in children.items() if "millivid.cached_from" not in run.data.tags}
    assert rerun == {"evaluate", "report"}

    results = run_pipeline(overrides=["diffusion.methods.full_res.frames=2"])
    children = nested_runs(results["pipeline_run_id"])
    rerun = {stage for stage, run in children.items() if "millivid.cached_from" not in run.data.tags}
    assert rerun == {"diffusion:full_res", "evaluate", "report"}


def test_millivid_ui_serves_the_workspace_and_the_compare_view_shows_cause_and_effect(pipeline_workspace, test_artifacts):
    """`millivid ui` over the embedded workspace serves artifacts; MLflow's compare view of two
    pipeline runs shows the override that differs (a param) and what it changed (metrics) on one screen."""
    import json
    import re

    import mlflow
    from services import browser_page, fetch, free_port, hide_mlflow_assistant, millivid_ui

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id

    def latest(name: str):
        return client.search_runs([experiment], f"attributes.run_name = '{name}'", order_by=["attributes.start_time DESC"])[0]

    changed_name = "pipeline · smoke diffusion.methods.full_res.frames=2"  # made by the test before
    base, changed = latest("pipeline · smoke").info.run_id, latest(changed_name).info.run_id
    with millivid_ui(dict(os.environ), free_port()) as url:
        report = fetch(f"{url}/get-artifact?path=report/index.html&run_uuid={changed}")
        assert b"<html" in report.lower()
        with browser_page() as page:
            page.goto(f"{url}/#/experiments/{experiment}/runs")
            page.get_by_text(changed_name).first.wait_for()
            hide_mlflow_assistant(page)
            page.screenshot(path=test_artifacts / "mlflow-runs.png")

            page.goto(f"{url}/#/compare-runs?runs={json.dumps([base, changed])}&experiments={json.dumps([experiment])}")
            page.get_by_text(changed_name).wait_for()
            hide_mlflow_assistant(page)
            page.screenshot(path=test_artifacts / "mlflow-compare-plot.png")  # MLflow plots the differing param against a metric
            page.get_by_role("switch", name="Parameters - Show diff only").click()
            page.get_by_role("switch", name="Metrics - Show diff only").click()
            cause = page.locator("th", has_text=re.compile(r"^diffusion\.methods\.full_res\.frames$"))
            effect = page.get_by_text("lpips_last_half/full_res", exact=True)  # with "diff only": it changed
            cause.wait_for()
            effect.wait_for()
            assert page.locator("th", has_text=re.compile(r"^eval\.bootstrap$")).count() == 0  # the same in both
            assert page.get_by_role("link", name="lpips_last_half/millivid").count() == 0  # millivid's model is cached
            page.get_by_role("button", name="Parameters").evaluate("section => section.scrollIntoView({block: 'start'})")
            page.screenshot(path=test_artifacts / "mlflow-compare-cause-and-effect.png")
            for element in (cause, effect):  # both on the one screen
                box = element.bounding_box()
                assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= page.viewport_size["height"], box
            assert cause.locator("xpath=..").inner_text().split() == ["diffusion.methods.full_res.frames", "7", "2"]


def test_force_redoes_a_stage(pipeline_workspace):
    results = run_pipeline(force=["autoencoder"], until="autoencoder")
    children = nested_runs(results["pipeline_run_id"])
    assert set(children) == {"data", "autoencoder"}
    assert "millivid.cached_from" in children["data"].data.tags
    assert "millivid.cached_from" not in children["autoencoder"].data.tags


KILL_SCRIPT = """
from millivid_platform.settings import load_settings
load_settings().export_environment()
from millivid_flows.pipeline import train_autoencoder
from millivid_platform.pipeline import PipelineParams
train_autoencoder(PipelineParams(preset="smoke", overrides={overrides!r}))
print("DONE", flush=True)
"""


def test_killed_training_stage_resumes_from_its_checkpoint(pipeline_workspace, ray_session):
    """SIGKILL the pipeline during autoencoder training; the rerun continues the same MLflow run."""
    import mlflow
    from prefect.settings import PREFECT_API_URL

    overrides = ["autoencoder.train.steps=200", "autoencoder.train.checkpoint_every=20", "autoencoder.train.log_every=20",
                 "autoencoder.train.eval_every=200"]
    # the session's Ray and Prefect, as the stack's clients use theirs (a killed driver's Ray Train
    # actors go with it); its own ephemeral ones: tests/test_faults.py
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PREFECT_API_URL": PREFECT_API_URL.value()}
    script = KILL_SCRIPT.format(overrides=overrides)
    first = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient()
    deadline, run = time.time() + 300, None
    while time.time() < deadline:
        experiment = client.get_experiment_by_name("millivid")  # None until a pipeline creates it
        runs = client.search_runs([experiment.experiment_id], "tags.`millivid.stage` = 'autoencoder' and attributes.status = 'RUNNING'") if experiment else []
        run = runs[0] if runs else None
        if run and max((m.step for m in client.get_metric_history(run.info.run_id, "train/loss")), default=0) >= 40:
            break
        assert first.poll() is None, "the pipeline ended before it could be killed"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert run is not None
    logged_before = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert 40 <= logged_before[-1] < 200

    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "DONE" in second.stdout, second.stderr[-3000:]
    history = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert history == list(range(20, 201, 20))  # one run, every step once: nothing lost, nothing repeated
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_time_limited_pipeline_pauses_in_training_and_the_same_command_continues(pipeline_workspace):
    """A limit that has passed by the first log step: the first run pauses, the same command finishes."""
    import contextlib
    import io
    import json

    import mlflow

    from millivid_cli.commands.pipeline import EXIT_PAUSED
    from millivid_cli.main import main

    command = ["pipeline", "--config", "smoke", "--until", "autoencoder", "--time-limit", "0.01", "--json",
               "autoencoder.train.steps=10", "autoencoder.train.eval_every=10"]

    def run_command() -> tuple[int, dict]:
        # stdout only, not capsys: when this test runs the session's first flow, Prefect's console
        # log handler would keep capsys's stderr, closed once the test ends
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(command)
        return code, json.loads(out.getvalue())

    code, out = run_command()
    assert code == EXIT_PAUSED
    assert out["paused"] == ("paused: autoencoder at step 5/10 after the 0.01-minute limit; "
                             "run it again with the same parameters to continue")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id
    paused = {run.data.tags["millivid.stage"]: run for run in client.search_runs([experiment], "tags.`millivid.paused` = 'true'")}
    assert set(paused) == {"pipeline", "autoencoder"}  # the stage's run and the invocation's parent run
    assert all(run.info.status == "KILLED" for run in paused.values())
    stage_run = paused["autoencoder"].info.run_id

    code, out = run_command()
    assert code == 0
    finished = out["stages"]["autoencoder"]["hierarchical"]
    assert finished["run_id"] == stage_run and not finished["cached"]  # resumed in place
    run = client.get_run(stage_run)
    assert run.info.status == "FINISHED" and "millivid.paused" not in run.data.tags
    assert [m.step for m in client.get_metric_history(stage_run, "train/loss")] == [5, 10]


def test_nightly_regression_passes_on_equal_and_fails_on_worse(pipeline_workspace):
    import mlflow

    from millivid_flows.nightly import RegressionParams, nightly_regression
    from millivid_platform import regression

    first = nightly_regression(RegressionParams(preset="smoke"))
    assert first["status"] == "no-baseline"
    regression.promote(first["evaluation_run"])

    equal = nightly_regression(RegressionParams(preset="smoke"))
    assert equal["status"] == "passed"

    # a deliberately worse pipeline: an autoencoder trained for one step (the smoke preset's diffusion
    # models are so small that one step of theirs is not measurably worse than twenty)
    worse = RegressionParams(preset="smoke", overrides=["autoencoder.train.steps=1", "autoencoder.train.warmup_steps=0"])
    state = nightly_regression(worse, return_state=True)
    assert state.is_failed() and state.message.startswith("regression: ") and "worse by" in state.message
    with pytest.raises(regression.RegressionError, match="worse by"):  # called as a function, it raises
        state.result()
    name, logs, artifacts = prefect_run_page(state.state_details.flow_run_id)
    assert name == "smoke autoencoder.train.steps=1 autoencoder.train.warmup_steps=0"
    assert not any("Traceback" in line for line in logs), logs  # an expected failure, not a crash
    assert any(line.startswith("nightly regression: failed: ") for line in logs)
    table = artifacts["regression-smoke"]
    assert table.startswith("# Nightly regression · smoke: failed")
    assert "| millivid | lpips |" in table and "**yes**" in table
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id
    failed = client.search_runs([experiment], f"tags.`{regression.TAG_REGRESSION}` = 'failed'")
    assert failed
    artifacts = {a.path for a in client.list_artifacts(failed[0].info.run_id, "regression")}
    assert {"regression/comparison.parquet", "regression/comparison.png"} <= artifacts
    assert "report/index.html" in {a.path for a in client.list_artifacts(failed[0].info.run_id, "report")}  # the night's site


def test_pipeline_cli_reports_stage_outputs(pipeline_workspace, capsys):
    import json

    from millivid_cli.main import main

    run_pipeline(until="data")  # so the CLI's run finds the data stage cached, whichever test ran before
    assert main(["pipeline", "--config", "smoke", "--until", "data", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stages"]["data"]["cached"] is True
    assert Path(out["stages"]["data"]["outputs"]["dataset_uri"]).exists()


def test_evaluation_gives_the_same_numbers_on_one_or_two_workers(pipeline_workspace):
    from millivid.eval.tables import read_parquet

    def rows(workers: int):
        results = run_pipeline(overrides=[f"eval.workers={workers}"], force=["evaluate"], until="evaluate")
        evaluation = results["evaluate"]
        assert not evaluation.cached
        return read_parquet(evaluation.outputs["evaluation_uri"] + "/rows.parquet")

    one, two = rows(1), rows(2)
    assert one.num_rows > 0
    assert one.equals(two)


def test_rollout_cli_writes_a_video(pipeline_workspace, tmp_path, capsys):
    from millivid.video import read_video
    from millivid_cli.main import main

    results = run_pipeline()
    model_run = results["diffusion"]["millivid"].run_id
    out = tmp_path / "rollout.mp4"
    assert main(["rollout", "--model", model_run, "--context", "24", "--frames", "8", "--out", str(out), "--steps", "2"]) == 0
    frames = read_video(str(out))
    assert len(frames) == 32 and frames.shape[-1] == 3
    assert main(["rollout", "--model", "0" * 32, "--context", "4", "--frames", "4", "--out", str(out)]) != 0


def test_eval_cli_compares_given_models_on_the_same_examples(pipeline_workspace, capsys):
    import json

    from millivid_cli.main import main

    results = run_pipeline()
    models = [f"--model={name}={result.run_id}" for name, result in results["diffusion"].items()]
    assert main(["eval", "--config", "smoke", *models, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    per_method = out["summary"]["per_method"]
    assert {"millivid", "full_res", "framepack", "random_frames", "context_mean", "nearest_pose"} <= set(per_method)
    assert set(out["summary"]["headline"]["against"]) == {"full_res", "framepack", "random_frames", "context_mean"}
    assert per_method["millivid"]["last_half"]["lpips"]["ci_low"] <= per_method["millivid"]["last_half"]["lpips"]["mean"]


def test_ae_eval_cli_compares_variants_level_by_level(pipeline_workspace, capsys, tmp_path):
    import json

    from millivid_cli.main import main

    figure = tmp_path / "levels.png"
    assert main(["ae", "eval", "--config", "smoke", "--frames", "16", "--figure", str(figure), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["tokens"] for row in out["levels"]] == [16, 4, 1]  # the smoke preset: 32x32 frames, patch 8
    assert {"hierarchical", "downscaled"} <= set(out["levels"][0])
    assert out["levels"][2]["psnr_difference"]["examples"] == 16
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert main(["ae", "eval", "--config", "smoke", "--frames", "16"]) == 0  # the trained pair again, as text
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("PSNR hierarchical - downscaled" in line for line in lines)


def test_how_the_downscaled_variant_trains_is_no_part_of_the_hierarchical_cache_key():
    from millivid.config import load_config
    from millivid_platform.autoencoder_stage import trained_slice

    plain = load_config("smoke", ["autoencoder.compare_downscaled=true"])
    end_to_end = load_config("smoke", ["autoencoder.compare_downscaled=true", "autoencoder.model.downscaled_training=end_to_end"])
    assert trained_slice(plain, "hierarchical") == trained_slice(end_to_end, "hierarchical")
    assert trained_slice(plain, "downscaled") != trained_slice(end_to_end, "downscaled")
    assert trained_slice(end_to_end, "downscaled").model.downscaled_training == "end_to_end"


def test_baseline_cli(pipeline_workspace, capsys):
    import json

    from millivid_cli.main import main

    assert main(["baseline", "promote", "f" * 32]) == 1
    assert "error" in capsys.readouterr().err

    evaluation = run_pipeline(until="evaluate")["evaluate"]
    assert main(["baseline", "promote", evaluation.run_id]) == 0
    capsys.readouterr()
    assert main(["baseline", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == evaluation.run_id and shown["group"] == "smoke"
    assert shown["promoted_at"] and shown["evaluated_at"] and shown["git_commit"]
    assert shown["link"].startswith("http://127.0.0.1:") and shown["link"].endswith(f"/runs/{evaluation.run_id}")
    assert {"millivid/lpips_last_half", "full_res/psnr_last_half", "random_frames/lpips_last_half"} <= set(shown["metrics"])
    assert main(["baseline", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # (the evaluate run is "evaluate (cached) · smoke" when an earlier test computed it)
    assert lines[0].startswith(f"baseline of 'smoke': evaluate run {evaluation.run_id} (evaluate ") and lines[0].endswith(" · smoke)")
    assert any(line.split()[0] == "millivid/lpips_last_half" for line in lines[3:])
