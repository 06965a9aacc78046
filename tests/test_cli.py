import json
import subprocess
import sys

import pytest
import torch

from millivid_cli.main import COMMANDS, build_parser, main


def subcommand_paths(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from subcommand_paths(child, (*prefix, name))


def test_every_command_has_help(capsys):
    paths = list(subcommand_paths(build_parser()))
    assert {p[0] for p in paths} == set(COMMANDS)
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        assert "usage: millivid" in capsys.readouterr().out


def test_emit_prints_one_json_object_or_the_commands_lines(capsys):
    from millivid_cli.main import emit

    result = {"a": 1, "long_key": [2]}
    assert emit(result, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == result
    assert emit(result, as_json=False) == 0  # default: right-aligned key: value lines
    assert capsys.readouterr().out == "             a: 1\n      long_key: [2]\n"
    assert emit(result, as_json=False, text=lambda shown: [f"a is {shown['a']}"]) == 0
    assert capsys.readouterr().out == "a is 1\n"


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "millivid_cli.main", "--help"], capture_output=True, text=True, check=True)
    assert "doctor" in out.stdout


def test_module_entry_point_reports_command_errors_without_a_traceback(tmp_path):
    """`python -m` runs cli.py as a second module: its errors must still be the commands' errors."""
    result = subprocess.run([sys.executable, "-m", "millivid_cli.main", "data", "info", str(tmp_path / "nothing")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'nothing'}: no manifest.json")


def test_doctor_json(capsys, workspace):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("versions", "tracking_uri", "prefect_api", "ray_address", "storage_root", "lpips", "i3d"):
        assert key in report
    assert report["tracking_uri"] == f"sqlite:///{workspace.resolve() / 'mlflow.db'}"
    assert report["versions"]["torch"].startswith("2.14.1")
    assert report["lpips"]["training"]["in_effect"] in ("pretrained", "random")
    assert report["i3d"]["available"] is False


def test_doctor_reports_real_services_from_environment(capsys, workspace, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("MILLIVID_STORAGE_ROOT", "s3://bucket/prefix")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tracking_uri"] == "http://127.0.0.1:5555"
    assert report["prefect_api"] == "http://127.0.0.1:4200/api"
    assert report["ray_address"] == "127.0.0.1:6379"
    assert report["storage_root"] == "s3://bucket/prefix"


def test_bad_config_value_fails_naming_the_field(capsys):
    assert main(["doctor", "--config", "smoke", "data.episodes=-3"]) == 2
    err = capsys.readouterr().err
    assert "data.episodes" in err and "-3" in err


def test_bench_list_and_unknown(capsys):
    assert main(["bench", "list"]) == 0
    assert "matmul" in json.loads(capsys.readouterr().out)["benchmarks"]
    assert main(["bench", "nope"]) == 1
    assert "unknown benchmark" in capsys.readouterr().err


def test_embedded_store_keeps_artifacts_in_the_workspace(settings, monkeypatch, tmp_path):
    import mlflow

    from millivid_platform import tracking

    # as after `export_environment()`: the URI now also comes from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    monkeypatch.chdir(tmp_path)
    from millivid_platform.settings import load_settings

    experiment = tracking.configure(load_settings())
    location = mlflow.get_experiment(experiment).artifact_location
    assert location == (settings.workspace / "mlartifacts").as_uri()


def test_bench_autoencoder_quick_runs_the_real_loop(capsys):
    assert main(["bench", "autoencoder", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)["smoke"]
    assert result["train"]["tokens_per_s"] > 0 and result["encode"]["frames_per_s"] > 0


def test_bench_gpu_quick_checks_cuda_or_says_it_skipped(capsys):
    assert main(["bench", "gpu", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)
    if torch.cuda.is_available():
        assert result["nccl"]["backend"] == "nccl" and result["nccl"]["ddp_losses_finite"]
        assert result["nccl"]["all_reduce"] == [1.5, 2.5]
    else:
        assert result == {"benchmark": "gpu", "cuda": False, "preset": "cpu", "skipped": "torch sees no CUDA device"}


def test_ui_refuses_a_port_outside_the_tcp_range(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ui", "--port", "99999"])
    assert exit_info.value.code == 2
    assert "99999: a TCP port is between 1 and 65535" in capsys.readouterr().err


def test_overrides_may_follow_options_after_a_command_s_other_positionals(capsys):
    from millivid_cli.main import parse

    args = parse(["schedule", "describe", "millivid", "--config", "cpu", "windows=[1,4,16]", "extra_budget=8"])
    assert (args.name, args.config, args.overrides) == ("millivid", "cpu", ["windows=[1,4,16]", "extra_budget=8"])
    for argv in (["pipeline", "eval.bootstrap=60", "--until", "data"], ["pipeline", "--until", "data", "eval.bootstrap=60"]):
        assert parse(argv).overrides == ["eval.bootstrap=60"], argv
    for stray in (["--bogus"], ["notanoverride"]):
        with pytest.raises(SystemExit) as exit_status:
            parse(["schedule", "describe", "millivid", "--config", "cpu", *stray])
        assert exit_status.value.code == 2 and f"unrecognized arguments: {stray[0]}" in capsys.readouterr().err
