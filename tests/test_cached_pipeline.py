"""A fully cached `millivid pipeline` answers from the cache: no Ray, no Prefect, no MLflow run, and
exactly the stages, cache keys and outputs that the flow's cached run finds (the probe's honesty).
Ray starts only for a stage that computes on it, keeping the flow's signal handlers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest
from conftest import workspace_environment
from services import MILLIVID


def test_ray_starts_for_a_stage_that_computes_and_not_for_a_cached_or_local_one(mlflow_store, settings, monkeypatch):
    from millivid_platform import stages

    started = []
    monkeypatch.setattr(stages, "ensure_ray", started.append)
    ctx = stages.PipelineContext(settings, mlflow_store)
    stages.run_stage(ctx, "report", {"x": 1}, {}, lambda run: {"answer": "42"})
    assert started == []
    for _ in range(2):  # the second time it is cached
        stages.run_stage(ctx, "diffusion:millivid", {"x": 1}, {}, lambda run: {"answer": "42"})
    assert started == [settings]


def test_signal_handlers_come_back_after_ray_replaced_them():
    from millivid_platform.compute import preserved_signal_handlers

    def flow_handler(*_):
        pass

    previous = signal.signal(signal.SIGTERM, flow_handler)
    try:
        with preserved_signal_handlers():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does
        assert signal.getsignal(signal.SIGTERM) is flow_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors = []

    def elsewhere():  # off the main thread nothing can replace a handler, and nothing fails
        try:
            with preserved_signal_handlers():
                pass
        except Exception as err:
            errors.append(err)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert errors == []


def params():
    from millivid_platform.pipeline import PipelineParams

    return PipelineParams(preset="smoke")  # what the session's smoke workspace ran


@pytest.fixture(scope="module")
def cached(smoke_workspace):
    """A workspace whose every stage is cached, and the results of a cached run of the flow there."""
    from millivid_flows.pipeline import pipeline

    with workspace_environment(smoke_workspace) as folder:
        yield folder, pipeline(params())


def run_count() -> int:
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("millivid").experiment_id
    return len(client.search_runs([experiment], max_results=10_000))


@pytest.mark.integration
@pytest.mark.slow
def test_the_probe_finds_the_keys_and_outputs_the_cached_flow_run_reuses(cached):
    import mlflow

    from millivid_cli.commands.pipeline import probe_stages
    from millivid_platform.settings import load_settings
    from millivid_platform.stage_walk import stage_results

    _, flow_results = cached
    before = run_count()
    probe = probe_stages(load_settings(), params(), "report")
    assert run_count() == before  # it recorded nothing

    def rows(results):
        return [(row.stage, row.key, row.outputs, row.cached) for row in stage_results(results)]

    assert rows(probe) == rows(flow_results) and len(rows(probe)) == 8
    assert all(hit for *_, hit in rows(probe))
    client = mlflow.MlflowClient()  # the flow's cached runs point at the runs the probe names
    for ours, theirs in zip(stage_results(probe), stage_results(flow_results), strict=True):
        assert client.get_run(theirs.run_id).data.tags["millivid.cached_from"] == ours.run_id
    assert probe["metrics"] == flow_results["metrics"]
    assert probe["experiment_id"] == flow_results["experiment_id"] and probe["pipeline_run_id"] is None


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("fields", "stage"), [
    ({"force": ["evaluate"]}, "evaluate: forced"),
    ({"overrides": ["eval.bootstrap=61"]}, "evaluate: no finished run"),
])
def test_the_probe_stops_at_a_stage_that_would_run(cached, fields, stage):
    from millivid_cli.commands.pipeline import probe_stages
    from millivid_platform.pipeline import PipelineParams
    from millivid_platform.settings import load_settings
    from millivid_platform.stages import CacheMiss

    with pytest.raises(CacheMiss, match=stage):
        probe_stages(load_settings(), PipelineParams(preset="smoke", **fields), "report")


@pytest.mark.integration
@pytest.mark.slow
def test_an_all_cached_command_starts_neither_ray_nor_prefect(cached, tmp_path):
    folder, flow_results = cached
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "PREFECT_API_URL")}
    env.update(MILLIVID_WORKSPACE=str(folder), MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
               RAY_TMPDIR=str(tmp_path / "ray"), PREFECT_HOME=str(tmp_path / "prefect"))
    before = run_count()
    result = subprocess.run([MILLIVID, "pipeline", "--config", "smoke", "--json"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["work_needed"] is False
    stages = out["stages"]
    assert stages["evaluate"]["cached"] and stages["report"]["cached"]
    assert all(run["cached"] for run in stages["diffusion"].values())
    assert stages["report"]["outputs"] == flow_results["report"].outputs
    assert not (tmp_path / "ray").exists()  # a local Ray keeps its session folders there
    assert not (tmp_path / "prefect" / "prefect.db").exists()  # Prefect's temporary server would create it
    assert run_count() == before


@pytest.mark.integration
@pytest.mark.slow
def test_an_all_cached_command_prints_every_stage_and_that_no_work_was_needed(cached, capsys, monkeypatch):
    from millivid_cli.main import main
    from millivid_platform import embedded_prefect, stages

    def refuse(*args):
        raise AssertionError("a cached pipeline started Ray or Prefect")

    monkeypatch.setattr(embedded_prefect, "start", refuse)
    monkeypatch.setattr(stages, "ensure_ray", refuse)
    assert main(["pipeline", "--config", "smoke", "--until", "evaluate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in lines[:6]] == ["data", "autoencoder", "encode", "diffusion",
                                                                  "evaluate", "metrics"]
    assert "'cached': True" in lines[4] and "lpips_last_half/millivid" in lines[5]
    assert any(line.startswith("every stage was cached: no work needed") for line in lines)
