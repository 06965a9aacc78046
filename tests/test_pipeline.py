"""The pipeline end to end with real Prefect (test harness), MLflow (SQLite) and Ray (local)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = {"data", "autoencoder", "encode", "diffusion:millivid", "diffusion:full_res", "diffusion:framepack",
          "evaluate", "report"}


@pytest.fixture(scope="module")
def pipeline_workspace(tmp_path_factory, ray_session, prefect_harness):
    """One workspace for the module: later tests rely on what earlier runs cached."""
    folder = tmp_path_factory.mktemp("pipeline") / "workspace"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MILLIVID_WORKSPACE", str(folder))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder


def run_pipeline(overrides=(), force=(), until="report"):
    from millivid_flows import pipeline as flows
    from millivid_platform.pipeline import PipelineParams

    flow = {"report": flows.pipeline, "evaluate": flows.evaluate, "autoencoder": flows.train_autoencoder, "data": flows.prepare_data}[until]
    return flow(PipelineParams(preset="smoke", overrides=list(overrides), force=list(force)))


def nested_runs(parent_run_id: str) -> dict[str, object]:
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {run.data.tags["millivid.stage"]: run for run in children}


def test_smoke_pipeline_end_to_end(pipeline_workspace):
    import mlflow

    results = run_pipeline()
    parent = mlflow.MlflowClient().get_run(results["pipeline_run_id"])
    assert parent.info.status == "FINISHED"
    for tag in ("mlflow.source.git.commit", "millivid.config_hash", "millivid.version.torch", "millivid.prefect_flow_run"):
        assert parent.data.tags[tag]
    children = nested_runs(results["pipeline_run_id"])
    assert set(children) == STAGES
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert all("millivid.cached_from" not in run.data.tags for run in children.values())
    # stages hand each other URIs under the storage root, and log what they made
    assert results["encode"].outputs["latents_uri"].startswith(str(pipeline_workspace))
    client = mlflow.MlflowClient()
    evaluate_artifacts = {a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "evaluation")}
    assert {"evaluation/summary.json", "evaluation/rows.parquet", "evaluation/plots"} <= evaluate_artifacts
    assert client.get_metric_history(children["evaluate"].info.run_id, "lpips/millivid")
    assert children["evaluate"].data.tags["millivid.headline"] in ("holds", "does not hold")
    assert [a.path for a in client.list_artifacts(results["pipeline_run_id"], "report")] == ["report/index.html"]
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


def test_killed_training_stage_resumes_from_its_checkpoint(pipeline_workspace):
    """SIGKILL the pipeline during autoencoder training; the rerun continues the same MLflow run."""
    import mlflow

    overrides = ["autoencoder.train.steps=400", "autoencoder.train.checkpoint_every=20", "autoencoder.train.log_every=20",
                 "autoencoder.train.eval_every=400"]
    env = dict(os.environ)  # the subprocess runs its own ephemeral Prefect and local Ray
    script = KILL_SCRIPT.format(overrides=overrides)
    first = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id
    deadline, run = time.time() + 300, None
    while time.time() < deadline:
        runs = client.search_runs([experiment], "tags.`millivid.stage` = 'autoencoder' and attributes.status = 'RUNNING'")
        run = runs[0] if runs else None
        if run and max((m.step for m in client.get_metric_history(run.info.run_id, "train/loss")), default=0) >= 40:
            break
        assert first.poll() is None, "the pipeline ended before it could be killed"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert run is not None
    logged_before = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert 40 <= logged_before[-1] < 400

    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "DONE" in second.stdout, second.stderr[-3000:]
    history = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert history == list(range(20, 401, 20))  # one run, every step once: nothing lost, nothing repeated
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_time_limited_pipeline_pauses_in_training_and_the_same_command_continues(pipeline_workspace):
    """A limit that has passed by the first log step: the first run pauses, the same command finishes."""
    import contextlib
    import io
    import json

    import mlflow

    from millivid_platform.cli import main
    from millivid_platform.commands.pipeline import EXIT_PAUSED

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

    # a deliberately worse model: the diffusion models barely trained
    worse = RegressionParams(preset="smoke", overrides=["diffusion.train.steps=1", "diffusion.train.warmup_steps=0"])
    with pytest.raises(regression.RegressionError, match="worse by"):
        nightly_regression(worse)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id
    failed = client.search_runs([experiment], f"tags.`{regression.TAG_REGRESSION}` = 'failed'")
    assert failed
    artifacts = {a.path for a in client.list_artifacts(failed[0].info.run_id, "regression")}
    assert {"regression/comparison.parquet", "regression/comparison.png"} <= artifacts


def test_pipeline_cli_reports_stage_outputs(pipeline_workspace, capsys):
    import json

    from millivid_platform.cli import main

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
    from millivid_platform.cli import main

    results = run_pipeline()
    model_run = results["diffusion"]["millivid"].run_id
    out = tmp_path / "rollout.mp4"
    assert main(["rollout", "--model", model_run, "--context", "24", "--frames", "8", "--out", str(out), "--steps", "2"]) == 0
    frames = read_video(str(out))
    assert len(frames) == 32 and frames.shape[-1] == 3
    assert main(["rollout", "--model", "0" * 32, "--context", "4", "--frames", "4", "--out", str(out)]) != 0


def test_eval_cli_compares_given_models_on_the_same_examples(pipeline_workspace, capsys):
    import json

    from millivid_platform.cli import main

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

    from millivid_platform.cli import main

    figure = tmp_path / "levels.png"
    assert main(["ae", "eval", "--config", "smoke", "--frames", "16", "--figure", str(figure), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["tokens"] for row in out["levels"]] == [64, 16, 4]
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
    from millivid_platform.cli import main

    assert main(["baseline", "promote", "f" * 32]) == 1
    assert "error" in capsys.readouterr().err
