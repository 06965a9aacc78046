"""Every `millivid` command, end to end at the smoke preset, as a user runs it: a new process each.

`INVOCATIONS` holds every sub-command of `millivid --help` and the flag combinations the README
documents, in an order where later ones use what earlier ones made (`{name}` fills in the run ids
and paths). Each must end with its expected exit status and say what it should; bad input never
prints a Python traceback (a successful run may relay Ray's own logs, tracebacks of retried
internal calls included); a sub-command missing from the table fails
`test_every_command_is_invoked`. The processes share the test session's Ray (RAY_ADDRESS) and
Prefect (its test server) and one MLflow store, so that each costs its own work, not a cluster's
start.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import workspace_environment
from services import MILLIVID

from millivid_cli.main import build_parser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    code: int = 0
    says: str = ""  # in stdout or stderr
    env: dict[str, str] = field(default_factory=dict)


def run(*argv: str, code: int = 0, says: str = "", **env: str) -> Invocation:
    return Invocation(argv, code, says, env)


INVOCATIONS = [
    run("doctor", "--json", says='"tracking_uri"'),
    run("doctor", "--config", "smoke", "autoencoder.model.width=abc", code=2, says="field 'autoencoder.model.width'"),
    run("pipeline", "--config", "smoke", "--json", says='"report"'),
    run("pipeline", "--config", "smoke", "--until", "data", "--json", says='"dataset_uri"'),
    run("pipeline", "--config", "smoke", "--methods", "millivid", "full_res", "--until", "diffusion"),
    run("pipeline", "--config", "smoke", "--force", "report", "--time-limit", "60", "eval.bootstrap=50"),
    run("pipeline", "--config", "smoke", "--methods", "nope", code=2, says="choose from millivid, full_res, framepack"),
    run("pipeline", "--config", "smoke", "data.split.val=0.6", "data.split.test=0.6", code=2, says="field 'data.split'"),
    run("ae", "train", "--config", "smoke", "--json", says='"autoencoder"'),
    run("ae", "encode", "--config", "smoke", "--time-limit", "60"),
    run("ae", "eval", "--config", "smoke", "--frames", "8", "--json", says='"levels"'),
    run("eval", "--config", "smoke", "--json", says='"per_method"'),
    run("eval", "--config", "smoke", "--model", "millivid={millivid_run}", "--json", says='"per_method"'),
    run("rollout", "--model", "{millivid_run}", "--context", "24", "--frames", "4", "--steps", "2", "--out", "{tmp}/rollout.mp4"),
    # the smoke windows hold no revisit in sight: the clear refusal (the numbers: tests/test_eval_knockout.py)
    run("probe", "--config", "smoke", "--model", "{millivid_run}", code=1, says="no revisit frame of the 2 windows lies in the sight"),
    run("baseline", "promote", "{evaluate_run}", says="is now the baseline of 'smoke'"),
    run("baseline", "show", "--group", "smoke", says="{evaluate_run}"),
    run("report", "--out", "{tmp}/site", "--json"),
    run("ui", says="MLflow UI: http://127.0.0.1:9", MLFLOW_TRACKING_URI="http://127.0.0.1:9"),
    run("schedule", "describe", "millivid", "--config", "smoke", "--json", says='"reach"'),
    run("schedule", "draw", "framepack", "--out", "{tmp}/framepack.gif"),
    run("schedule", "plan", "millivid", "--config", "smoke"),
    run("schedule", "compare", "--config", "smoke"),
    run("data", "render", "--config", "smoke", "--out", "{tmp}/world"),
    run("data", "render", "--config", "smoke", "--out", "{tmp}/world", code=1, says="pass --overwrite"),
    run("data", "info", "{tmp}/world", "--json", "--verify", says='"verified": true'),
    run("data", "preview", "{tmp}/world", "--out", "{tmp}/world.png"),
    run("data", "import", "{tmp}/episodes", "--out", "{tmp}/imported", "--val", "0.6", "--test", "0.6", code=2, says="--val"),
    run("data", "import", "{tmp}/episodes", "--out", "{tmp}/imported", says="wrote"),
    run("stack", "status", code=1, says="stack is not running"),
    run("stack", "env", says="export RAY_ADDRESS="),
    run("stack", "down"),
    run("bench", "list", says='"storage"'),
    run("bench", "storage", "--quick", "--json", says='"shard_check"'),
]


# sub-commands whose end-to-end test lives elsewhere, for a reason
COVERED_ELSEWHERE = {("stack", "up"): "tests/test_stack.py (starts every service, minutes)"}


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                inner = command_paths(child, (*prefix, name))
                paths += inner or [(*prefix, name)]
    return paths


def test_every_command_is_invoked():
    invoked = {invocation.argv[: len(path)] for invocation in INVOCATIONS for path in command_paths(build_parser())}
    missing = [path for path in command_paths(build_parser()) if path not in invoked and path not in COVERED_ELSEWHERE]
    assert missing == []


@pytest.fixture(scope="module")
def shared(tmp_path_factory, smoke_workspace, ray_session):
    """Where every invocation runs: the session's smoke workspace (the smoke pipeline cached), Ray
    and Prefect, and files to import."""
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path_factory.mktemp("cli")
    for index in range(3):
        buffer = io.BytesIO()
        np.savez(buffer, video=np.full((12, 16, 16, 3), 60 * index, np.uint8), actions=np.zeros(12, int))
        (folder / "episodes").mkdir(exist_ok=True)
        (folder / "episodes" / f"ep{index}.npz").write_bytes(buffer.getvalue())
    env = {**os.environ, "MILLIVID_WORKSPACE": str(smoke_workspace),
           "MLFLOW_TRACKING_URI": f"sqlite:///{smoke_workspace / 'mlflow.db'}",
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return {"env": env, "values": {"tmp": str(folder)}}


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=[" ".join(i.argv[:4]) for i in INVOCATIONS])
def test_command(shared, invocation):
    values = shared["values"]
    argv = [part.format(**values) for part in invocation.argv]
    result = subprocess.run([MILLIVID, *argv], env={**shared["env"], **invocation.env}, capture_output=True, text=True,
                            timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == invocation.code, output[-4000:]
    if invocation.code:
        assert "Traceback" not in output, output[-4000:]
    assert invocation.says.format(**values) in output
    if argv[:2] == ["pipeline", "--config"] and "--json" in argv and result.returncode == 0:
        stages = json.loads(result.stdout)["stages"]
        if "evaluate" in stages:  # the run ids later invocations use
            values["millivid_run"] = stages["diffusion"]["millivid"]["run_id"]
            values["evaluate_run"] = stages["evaluate"]["run_id"]


def test_a_cached_eval_does_not_start_ray(smoke_workspace, capsys, monkeypatch):
    """`millivid eval` whose evaluation is cached answers from the cache: nothing asks for Ray (this
    process has the session's Ray, so the check is that nobody calls `ensure_ray`)."""
    from millivid_cli.main import main
    from millivid_platform import compute, stages

    def refuse(*args):
        raise AssertionError("a cached `millivid eval` started Ray")

    monkeypatch.setattr(compute, "ensure_ray", refuse)
    monkeypatch.setattr(stages, "ensure_ray", refuse)
    with workspace_environment(smoke_workspace):
        assert main(["eval", "--config", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "evaluation: " in out and "millivid: LPIPS last half" in out
