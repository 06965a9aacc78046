import pytest
from pydantic import ValidationError

from millivid.config import (
    PRESETS,
    ConfigError,
    apply_overrides,
    config_hash,
    dump_config,
    load_config,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    config = load_config(preset)
    assert config.name == preset
    assert config.geometry.tokens_per_level[-1] >= 1


def test_overrides_apply_and_parse_yaml_values():
    config = load_config("smoke", ["autoencoder.model.width=48", "diffusion.methods.millivid.windows=[1,4,16]", "data.seed=7"])
    assert config.autoencoder.model.width == 48
    assert config.diffusion.methods["millivid"].windows == (1, 4, 16)
    assert config.data.seed == 7


def test_bad_value_names_field_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        load_config("smoke", ["autoencoder.model.width=abc"])
    message = str(err.value)
    assert "autoencoder.model.width" in message and "'abc'" in message and "integer" in message


def test_unknown_field_is_rejected_by_name():
    with pytest.raises(ConfigError, match="autoencoder.model.widht"):
        load_config("smoke", ["autoencoder.model.widht=64"])


def test_invalid_geometry_rejected_at_config_time():
    with pytest.raises(ConfigError, match="do not tile"):
        load_config("smoke", ["autoencoder.model.levels=5"])
    with pytest.raises(ConfigError, match="power of two"):
        load_config("smoke", ["data.size=48"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("smoke", ["autoencoder.model.width"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_unknown_preset_or_missing_file():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("nope")


def test_yaml_file_and_bad_yaml(tmp_path):
    good = tmp_path / "exp.yaml"
    good.write_text("name: mine\ndata: {size: 32}\nautoencoder: {model: {patch: 4, levels: 3}}\n")
    assert load_config(good).name == "mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_configs_are_frozen():
    config = load_config("smoke")
    with pytest.raises(ValidationError):
        config.autoencoder.model.width = 3


def test_hash_is_stable_and_sensitive():
    a, b = load_config("smoke"), load_config("smoke")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a.autoencoder) == config_hash(load_config("smoke", ["diffusion.model.width=40"]).autoencoder)
    assert config_hash(a) != config_hash(load_config("smoke", ["data.seed=1"]))
    # canonical JSON: a hash does not depend on key order of the source
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})


def test_dump_round_trips(tmp_path):
    config = load_config("cpu")
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(config))
    assert config_hash(load_config(path)) == config_hash(config)
