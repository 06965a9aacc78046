"""bench/headline.py: a preset's headline end to end with the science package only (`--quick` on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from millivid_bench.headline import MINUTES_ENV, OUT_ENV, OVERRIDES_ENV, plan_steps
from millivid_cli.main import main

SERVICES = ("ray", "prefect", "mlflow", "millivid_platform", "millivid_flows")
METHODS = ("millivid", "full_res", "framepack")
REFERENCES = ("context_mean", "copy_last", "nearest_pose", "random_frames", "ground_truth_latents")

# run(quick=True) in a fresh interpreter, so its sys.modules shows exactly what running it imports
RUN = """
import json, sys
from millivid_bench.headline import run
result = run(quick=True, out=sys.argv[1])
services = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2].split(",")))
print(json.dumps({"result": result, "services": services}))
"""


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("headline")
    env = {key: value for key, value in os.environ.items() if key not in (MINUTES_ENV, OUT_ENV, OVERRIDES_ENV)}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")  # the CPU path; one thread on a shared machine
    done = subprocess.run([sys.executable, "-c", RUN, str(out), ",".join(SERVICES)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_running_it_imports_no_service(quick):
    assert quick["services"] == []


@pytest.mark.slow
def test_result_has_every_section(quick):
    result = quick["result"]
    assert {"benchmark", "quick", "preset", "overrides", "device", "precision", "budget", "phase_seconds", "autoencoder",
            "diffusion", "schedules", "examples", "lpips_backbone", "fvd", "consistency", "latent_memory", "headline",
            "outputs"} <= set(result)
    assert (result["benchmark"], result["quick"], result["preset"], result["device"]["name"]) == ("headline", True, "smoke", "cpu")
    assert set(result["phase_seconds"]) == {"data", "schedules", "autoencoder", "encode", "diffusion", "evaluation", "total"}
    assert result["headline"]["verdict"] in ("holds", "does not hold")


@pytest.mark.slow
def test_every_model_was_trained(quick):
    result = quick["result"]
    assert result["autoencoder"]["steps"] == 4 and result["autoencoder"]["steps_per_s"] > 0 and result["autoencoder"]["steps_reason"]
    diffusion = result["diffusion"]
    assert diffusion["trained"] == "one after the other" and diffusion["steps"] == 3 and diffusion["steps_reason"]
    assert set(diffusion["per_method"]) == set(METHODS)
    for name, numbers in diffusion["per_method"].items():
        assert numbers["steps"] == 3 and not numbers["stopped_early"] and numbers["warmup_steps"] == 2, name
        assert numbers["steps_per_s"] > 0 and numbers["tokens_per_step"] == result["schedules"][name]["tokens_per_step"]
        assert numbers["held_out"]["loss"] > 0


@pytest.mark.slow
def test_every_method_and_reference_was_evaluated(quick):
    result = quick["result"]
    assert set(result["consistency"]) == set(METHODS) | set(REFERENCES)
    for name in METHODS:
        line = result["consistency"][name]
        assert line["revisit"]["frames"] > 0 and line["revisit"]["lpips"]["mean"] is not None, name
        assert {"mean", "ci_low", "ci_high"} <= set(line["revisit"]["psnr"]) and line["last_half_lpips"]["mean"] is not None
        assert line["revisit_within_reach"]["frames"] + line["revisit_out_of_reach"]["frames"] == line["revisit"]["frames"]
        assert result["schedules"][name]["reach"] == line["reach"]
        assert 0 <= result["schedules"][name]["training_clip_revisits"]["share"] <= 1
    assert all(set(METHODS) <= set(candidates) for candidates in result["latent_memory"]["levels"].values())
    assert len(result["latent_memory"]["levels"]) == 3
    assert set(result["headline"]["against"]) == {"full_res", "framepack", "random_frames", "context_mean"}
    folder = Path(result["outputs"]["folder"]) / "evaluation"
    assert json.loads((folder / "summary.json").read_text())["methods"] == list(METHODS)
    assert (folder / "rows.parquet").is_file() and (folder / "plots" / "consistency.png").is_file()


def test_steps_fit_the_time_left_within_the_config_and_after_the_warm_up():
    assert plan_steps(cap=1000, done=30, seconds_per_step=0.01, seconds=100)[0] == 1000
    steps, why = plan_steps(cap=1000, done=30, seconds_per_step=0.5, seconds=100)
    assert steps == 230 and "230 of the config's 1000 steps" in why
    assert plan_steps(cap=1000, done=30, seconds_per_step=0.5, seconds=0)[0] == 30


def test_only_benchmarks_that_run_a_preset_take_one(capsys):
    assert main(["bench", "matmul", "--preset", "cpu"]) == 1
    assert "takes no --preset" in capsys.readouterr().err
