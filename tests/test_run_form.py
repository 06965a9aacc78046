"""The Prefect run form (`PipelineParams`, `RegressionParams`): its choices, its checks and the run label."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from millivid_platform.pipeline import PipelineParams


def test_the_label_names_preset_overrides_and_methods():
    assert PipelineParams().label == "smoke"
    params = PipelineParams(preset="smoke", overrides=["eval.bootstrap=60"], methods=["millivid"])
    assert params.label == "smoke eval.bootstrap=60 methods=millivid"
    assert params.resolve().eval.bootstrap == 60


def test_a_bad_override_or_method_fails_when_the_parameters_are_made():
    with pytest.raises(ValidationError, match="field 'autoencoder.model.width': got 'abc'"):
        PipelineParams(overrides=["autoencoder.model.width=abc"])
    with pytest.raises(ValidationError, match="'framepack_kernel' not in diffusion.methods of config 'smoke'"):
        PipelineParams(methods=["framepack_kernel"])  # a method of the paper preset only
    with pytest.raises(ValidationError, match="force"):
        PipelineParams(force=["autoencodr"])
    with pytest.raises(ValidationError, match="overrides apply to a preset"):
        PipelineParams(config=PipelineParams().resolve(), overrides=["eval.bootstrap=60"])


def test_a_run_loads_its_configuration_once(monkeypatch):
    """The command line loads the config (for preflight) and hands it over; Prefect's validation of
    the flow's parameters, which runs the params' validator again, keeps the loaded config."""
    from millivid_cli.commands.pipeline import params_from_args
    from millivid_cli.main import build_parser
    from millivid_flows.pipeline import pipeline
    from millivid_platform import pipeline as pipeline_module

    loads = []
    real_load = pipeline_module.load_config
    monkeypatch.setattr("millivid_cli.commands.pipeline.load_config", lambda *a: loads.append(a) or real_load(*a))
    monkeypatch.setattr(pipeline_module, "load_config", lambda *a: loads.append(a) or real_load(*a))

    params = params_from_args(build_parser().parse_args(["pipeline", "--until", "data", "eval.bootstrap=60"]))
    validated = pipeline.validate_parameters({"params": params})["params"]
    assert loads == [("smoke", ["eval.bootstrap=60"])]
    assert validated.resolve() is params.resolve() and params.resolve().eval.bootstrap == 60

    from millivid_flows.nightly import RegressionParams, nightly_regression

    loads.clear()
    nightly = RegressionParams(overrides=["eval.bootstrap=60"])
    assert nightly_regression.validate_parameters({"params": nightly})["params"].pipeline is nightly.pipeline
    assert loads == [("smoke", ["eval.bootstrap=60"])]


def test_the_command_line_loads_no_configuration_before_the_run_s_own(tmp_path):
    """In a fresh process: parsing `millivid pipeline`'s arguments and making the params loads the
    config once (the presets the run form offers are read only when Prefect asks for its schema)."""
    import subprocess
    import sys

    code = (
        "import millivid.config as c\n"
        "loads = []\n"
        "real = c.validate_config\n"
        "c.validate_config = lambda *a, **k: loads.append(k.get('origin')) or real(*a, **k)\n"
        "from millivid_cli.main import parse\n"
        "from millivid_cli.commands.pipeline import params_from_args\n"
        "params_from_args(parse(['pipeline', '--until', 'data']))\n"
        "print(len(loads))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["1"], out.stdout


def test_a_changed_copy_resolves_its_own_configuration():
    params = PipelineParams(overrides=["eval.bootstrap=60"])
    changed = params.model_copy(update={"overrides": ["eval.bootstrap=70"]})
    assert (params.resolve().eval.bootstrap, changed.resolve().eval.bootstrap) == (60, 70)
    with pytest.raises(ValidationError, match="'nope' not in diffusion.methods"):
        params.model_copy(update={"methods": ["nope"]})
    assert params.model_copy().resolve() is params.resolve()

    from millivid_flows.nightly import RegressionParams

    nightly = RegressionParams(overrides=["eval.bootstrap=60"]).model_copy(update={"overrides": ["eval.bootstrap=70"]})
    assert nightly.pipeline.resolve().eval.bootstrap == 70


def test_the_form_offers_stages_and_methods_and_only_configuration_keys():
    from millivid_flows.nightly import RegressionParams

    schema = PipelineParams.model_json_schema()["properties"]
    assert schema["force"]["items"]["enum"] == ["data", "autoencoder", "encode", "diffusion", "evaluate", "report", "all"]
    assert schema["methods"]["items"]["enum"] == ["millivid", "full_res", "framepack", "framepack_kernel"]
    assert schema["methods"]["type"] == "array"  # a multi-select, not "null or a list"
    key = re.compile(schema["overrides"]["items"]["pattern"])
    for good in ("eval.bootstrap=60", "diffusion.methods.full_res.frames=2", "diffusion.methods.mine={kind: full_res, frames: 3}",
                 "autoencoder.model=", "data.mix.spin=0.5"):
        assert key.match(good), good
    for bad in ("autoencoder.model.widht=3", "eval.bootstrap", "bootstrap=60"):
        assert not key.match(bad), bad
    assert RegressionParams.model_json_schema()["properties"]["overrides"]["items"]["pattern"] == key.pattern
    with pytest.raises(ValidationError, match="eval.bootstrap"):
        RegressionParams(overrides=["eval.bootstrap=-1"])


def test_descriptions_are_for_users():
    """What the form shows: no notes for developers (cache keys, UI internals)."""
    from millivid_flows.nightly import RegressionParams

    for model in (PipelineParams, RegressionParams):
        schema = model.model_json_schema()
        texts = [schema.get("description", "")] + [field.get("description", "") for field in schema["properties"].values()]
        for text in texts:
            assert not re.search(r"cache key|Prefect|form|\(the .* shows", text), text
