"""`millivid schedule describe|draw|plan|compare`."""

import json

import pytest
import yaml
from PIL import Image

from millivid_cli.main import main


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_describe_the_paper_schedule_from_overrides(capsys):
    argv = [
        "schedule",
        "describe",
        "millivid",
        "windows=[1,4,16,64]",
        "extra_budget=256",
        "finest_tokens=256",
        "--json",
    ]
    result = run_json(capsys, argv)
    assert result["steps"] == 85 and result["max_tokens_per_step"] == 1280
    assert result["tokens_per_step"] == [1280] * 85
    assert (result["chunk_frames"], result["new_frames_per_chunk"]) == (149, 64)
    assert (
        result["geometry"]["tokens_per_level"] == [256, 64, 16, 4]
        and result["geometry"]["levels"] == 4
    )
    assert result["config"] == {"kind": "millivid", "windows": [1, 4, 16, 64], "extra_budget": 256}


def test_describe_takes_geometry_from_the_config(capsys):
    result = run_json(capsys, ["schedule", "describe", "millivid", "--config", "cpu", "--json"])
    assert result["geometry"]["tokens_per_level"] == [16, 4, 1]
    assert (result["steps"], result["max_tokens_per_step"], result["chunk_frames"]) == (21, 112, 85)
    assert result["reach"] == {"overall": 69, "per_level": {"0": 8, "1": 17, "2": 69}}
    result = run_json(capsys, ["schedule", "describe", "framepack", "--config", "paper", "--json"])
    assert result["max_tokens_per_step"] == 3840 and result["new_frames_per_chunk"] == 3
    result = run_json(
        capsys, ["schedule", "describe", "full_res", "finest_tokens=64", "levels=2", "--json"]
    )
    assert (
        result["geometry"]["tokens_per_level"] == [64, 16]
        and result["max_tokens_per_step"] == 7 * 64  # the smoke preset's full_res: 7 frames
    )


def test_name_is_a_method_or_a_kind(capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "diffusion": {
                    "methods": {
                        "mine": {
                            "kind": "millivid",
                            "windows": [2, 8, 32, 128],
                            "extra_budget": 512,
                        }
                    }
                }
            }
        )
    )
    result = run_json(capsys, ["schedule", "describe", "mine", "--config", str(config), "--json"])
    assert result["name"] == "mine" and result["max_tokens_per_step"] == 512 + 4 * 512
    result = run_json(
        capsys, ["schedule", "describe", "framepack", "--config", str(config), "--json"]
    )
    assert result["config"]["kind"] == "framepack" and result["max_tokens_per_step"] == 3840


def test_describe_prints_a_readable_summary(capsys):
    assert main(["schedule", "describe", "full_res"]) == 0
    out = capsys.readouterr().out
    assert "max_tokens_per_step: 112" in out and "level 0 |cccDDDD" in out and "reach" in out


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["nope"], 1, "unknown schedule 'nope'"),
        (["millivid", "windows=[2,3,16]"], 2, "windows"),
        (["millivid", "extra_budget=-1"], 2, "extra_budget"),
        (["millivid", "windows=[1,4]"], 2, "windows"),
        (["full_res", "frames=1"], 2, "frames"),
        (["full_res", "colour=red"], 2, "colour"),
        (["millivid", "finest_tokens=100", "levels=3"], 2, "finest_tokens"),
        (["millivid", "finest_tokens=many"], 2, "finest_tokens"),
        (["millivid", "levels=0"], 2, "levels"),
    ],
)
def test_bad_input_names_the_problem(capsys, args, code, named):
    assert main(["schedule", "describe", *args]) == code
    assert named in capsys.readouterr().err


def test_draw_writes_the_picture(capsys, tmp_path):
    out = tmp_path / "millivid.gif"
    result = run_json(
        capsys,
        ["schedule", "draw", "millivid", "--config", "cpu", "--out", str(out), "--frame-ms", "100"],
    )
    assert result == {"out": str(out), "schedule": "millivid", "steps": 21}
    assert Image.open(out).n_frames == 21
    for suffix in ("html", "png"):
        run_json(
            capsys,
            ["schedule", "draw", "framepack", "--out", str(tmp_path / f"framepack.{suffix}")],
        )
        assert (tmp_path / f"framepack.{suffix}").stat().st_size > 100
    assert main(["schedule", "draw", "full_res", "--out", str(tmp_path / "x.bmp")]) == 1
    assert "unknown picture format" in capsys.readouterr().err and not (tmp_path / "x.bmp").exists()


def test_plan_uses_the_eval_sizes(capsys, tmp_path):
    result = run_json(capsys, ["schedule", "plan", "millivid", "--config", "paper"])
    assert (result["context_frames"], result["total_frames"]) == (256, 1024)
    assert result["model_calls_per_level"]["0"] == 256 and result["frames_needed"] == 1024
    result = run_json(capsys, ["schedule", "plan", "full_res", "--context", "4", "--total", "10"])
    assert result["model_calls"] == 2 and result["generated_frames"] == 6  # 4 new frames per call
    assert main(["schedule", "plan", "full_res", "--context", "10", "--total", "4"]) == 1
    assert "context_frames" in capsys.readouterr().err
    result = run_json(capsys, ["schedule", "plan", "millivid", "--out", str(tmp_path / "plan.png")])
    assert Image.open(tmp_path / "plan.png").height > result["model_calls"]
    assert main(["schedule", "plan", "millivid", "--out", str(tmp_path / "plan.gif")]) == 1


def test_compare_takes_only_geometry_overrides(capsys):
    assert main(["schedule", "compare", "levels=3", "windows=[1,4,16]"]) == 1
    assert "compare takes only finest_tokens=N / levels=N, not windows" in capsys.readouterr().err
    assert main(["schedule", "compare", "levels=x"]) == 2
    assert "field 'levels': got 'x'" in capsys.readouterr().err


def test_compare_warns_about_unmatched_budgets(capsys, tmp_path):
    result = run_json(capsys, ["schedule", "compare", "--config", "paper"])
    assert set(result["methods"]) == {"millivid", "full_res", "framepack", "framepack_kernel"}
    assert result["budget_warnings"] == []
    config = tmp_path / "unmatched.yaml"
    methods = {
        "millivid": {"kind": "millivid", "windows": [1, 4, 16, 64], "extra_budget": 256},
        "full_res": {"kind": "full_res", "frames": 14},
    }
    config.write_text(yaml.safe_dump({"diffusion": {"methods": methods}}))
    result = run_json(capsys, ["schedule", "compare", "--config", str(config)])
    assert result["methods"]["millivid"]["max_tokens_per_step"] == 1280
    assert len(result["budget_warnings"]) == 1 and "'millivid'" in result["budget_warnings"][0]
