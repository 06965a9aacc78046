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
from millivid.world.policies import MIXED_WEIGHTS


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


def test_a_schedule_field_is_named_as_written_without_its_kind():
    """pydantic puts a union member's tag in the location (diffusion.methods.fast.full_res.frames)."""
    with pytest.raises(ConfigError, match=r"field 'diffusion\.methods\.fast\.frames': got 1;"):
        load_config("smoke", ["diffusion.methods.fast={kind: full_res, frames: 1}"])
    with pytest.raises(ConfigError, match=r"field 'diffusion\.methods\.millivid\.windows': got \[4, 1\];"):
        load_config("smoke", ["diffusion.methods.millivid.windows=[4, 1]"])


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
    good.write_text("name: mine\ndata: {size: 64}\nautoencoder: {model: {patch: 4, levels: 4}}\n")
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


def test_behaviour_mix_defaults_to_the_mixed_weights_and_lists_every_behaviour():
    assert load_config("paper").data.mix == MIXED_WEIGHTS
    assert load_config("smoke", ["data.mix=null"]).data.mix == MIXED_WEIGHTS
    spin_only = load_config("smoke", ["data.mix={spin: 2}"])
    assert spin_only.data.mix == {"return": 0.0, "revisit": 0.0, "spin": 2.0, "wander": 0.0}
    assert config_hash(spin_only) == config_hash(load_config("smoke", ["data.mix={wander: 0, spin: 2}"]))
    assert load_config("paper", ["data.policy=spin"]).data.mix == MIXED_WEIGHTS
    # a preset's own mix must be cleared to switch policy: it would not be used
    with pytest.raises(ConfigError, match="data.mix=null"):
        load_config("smoke", ["data.policy=spin"])
    assert load_config("smoke", ["data.policy=spin", "data.mix=null"]).data.policy == "spin"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.mix.spin=-1", "greater than or equal to 0"),
        ("data.mix.spin=.nan", "finite"),
        ("data.mix.wander=.inf", "finite"),
        ("data.mix.jump=1", "'return', 'revisit', 'spin' or 'wander'"),
        ("data.mix={spin: 0, wander: 0}", "above 0"),
    ],
)
def test_bad_behaviour_mix_is_rejected_naming_the_field(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", [override])
    assert "data.mix" in str(err.value) and expected in str(err.value)


def test_a_mix_with_another_policy_is_rejected_not_ignored():
    with pytest.raises(ConfigError, match=r"data.mix .* only used by data.policy=mixed, and data.policy is 'spin'"):
        load_config("smoke", ["data.policy=spin", "data.mix.spin=1"])


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["diffusion.methods.millivid.windows=[1,4]"], "diffusion.methods.millivid: millivid windows"),
        (["diffusion.methods.framepack.context=[1,4]"], "diffusion.methods.framepack: framepack context"),
        (["diffusion.methods.my#method={kind: full_res, frames: 4}"], "diffusion.methods.my#method"),
        (["diffusion.methods.random_frames={kind: full_res, frames: 4}"], "reference line"),
        (["diffusion.methods.ground_truth={kind: full_res, frames: 4}"], "reference line"),
    ],
)
def test_every_schedule_is_built_at_load(overrides, named):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides)
    assert named in str(info.value)


def test_headline_method_must_see_as_far_as_a_revisit_lies():
    with pytest.raises(ConfigError) as info:
        load_config("cpu", ["diffusion.methods.millivid.extra_budget=0"])  # reach 5 frames
    message = str(info.value)
    assert "eval.headline_method" in message and "eval.revisit_min_gap" in message and "sees 5 frames" in message
    assert load_config("cpu", ["diffusion.methods.millivid.extra_budget=0", "eval.revisit_min_gap=5"])
    with pytest.raises(ConfigError, match="'full_res' sees 3 frames"):
        load_config("cpu", ["eval.headline_method=full_res"])


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_presets_can_show_memory(preset):
    """MilliVid and FramePack see every context frame of the evaluation; every method has the same budget."""
    config = load_config(preset)
    reach = {name: schedule.reach.overall for name, schedule in config.schedules.items()}
    assert reach["millivid"] >= config.eval.context and reach["framepack"] >= config.eval.context
    assert reach["millivid"] >= config.eval.revisit_min_gap
    assert len({schedule.max_tokens for schedule in config.schedules.values()}) == 1


def test_paper_preset_reach_is_the_papers():
    config = load_config("paper")
    assert config.schedules["millivid"].reach.overall == 255 and config.eval.context == 256


def test_schedules_are_built_once():
    config = load_config("smoke")
    assert config.schedules["millivid"] is config.schedules["millivid"]
    assert config.schedules["millivid"].name == "millivid"
    with pytest.raises(TypeError):
        config.schedules["millivid"] = config.schedules["full_res"]  # read-only: one config, one set of schedules


def test_a_changed_copy_is_validated_and_gets_its_own_schedules():
    config = load_config("smoke")
    methods = {"millivid": config.diffusion.methods["millivid"]}
    copy = config.model_copy(update={"diffusion": config.diffusion.model_copy(update={"methods": methods})})
    assert list(copy.schedules) == ["millivid"] and copy.schedules["millivid"] is not config.schedules["millivid"]
    with pytest.raises(ValidationError, match="eval.fvd_chunk / eval.rollout"):
        config.model_copy(update={"eval": config.eval.model_copy(update={"fvd_chunk": config.eval.rollout + 1})})
    assert config.model_copy().schedules["millivid"] is config.schedules["millivid"]  # a plain copy keeps them
    bad = config.diffusion.methods["millivid"].model_copy(update={"windows": (4, 1)})  # model_copy checks nothing
    unchecked = config.diffusion.model_copy(update={"methods": {"millivid": bad}})
    with pytest.raises(ValidationError, match="whole multiple"):  # the section's own checks run too
        config.model_copy(update={"diffusion": unchecked})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.split.val=0.6", "data.split.test=0.6"], "field 'data.split'"),
        (["data.split.val=0.5", "data.split.test=0.5"], "leaves no episodes to train on"),
        (["eval.fvd_chunk=20"], "eval.fvd_chunk / eval.rollout"),
        (["compute.workers=5"], "diffusion.train.batch_size / compute.workers"),
        (["compute.workers=10", "diffusion.train.batch_size=16"], "autoencoder.train.batch_size / compute.workers"),
        (["data.source=import"], "data.import_uri: required"),
    ],
)
def test_settings_that_cannot_work_are_rejected_at_load_naming_the_field(overrides, named):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides)
    assert named in str(info.value)


def test_compute_max_failures_defaults_to_two_and_stays_out_of_cache_keys():
    config = load_config("smoke", ["compute.max_failures=0"])
    assert load_config("smoke").compute.max_failures == 2
    assert config.compute.result_fields() == load_config("smoke").compute.result_fields()
