"""The preflight: data that cannot feed the configured stages stops in seconds, saying what to change."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest

from millivid import storage
from millivid.config import ConfigError, load_config
from millivid.data.importers import import_dataset
from millivid_cli.main import main
from millivid_platform import preflight


def short_episodes(folder, count: int = 6, frames: int = 10) -> str:
    for index in range(count):
        buffer = io.BytesIO()
        np.savez(buffer, video=np.full((frames, 16, 16, 3), 40 * index, np.uint8), actions=np.zeros(frames, int))
        storage.write_bytes(str(folder / f"ep{index}.npz"), buffer.getvalue())
    return str(folder)


def test_unknown_methods_are_rejected_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"--methods: 'nope' not in diffusion.methods .* choose from millivid, full_res, framepack"):
        preflight.check_methods(load_config("smoke"), ["millivid", "nope"])


def test_overrides_swallowed_by_methods_are_named():
    """`--methods full_res framepack diffusion.train.steps=10` reads the override as a method name."""
    with pytest.raises(ConfigError, match=r"'diffusion.train.steps=10' look like overrides.*before --methods"):
        preflight.check_methods(load_config("smoke"), ["full_res", "diffusion.train.steps=10"])


def test_a_method_given_twice_or_no_method_at_all_is_rejected():
    with pytest.raises(ConfigError, match=r"--methods: 'millivid' given more than once"):
        preflight.check_methods(load_config("smoke"), ["millivid", "full_res", "millivid"])
    empty = load_config("smoke", ["diffusion.methods={}"])
    preflight.check_config(empty, "encode")  # the stages before diffusion need no method
    with pytest.raises(ConfigError, match=r"diffusion.methods of config 'smoke' is empty.*--until diffusion"):
        preflight.check_config(empty, "diffusion")


def test_a_rendered_dataset_is_checked_from_the_config_alone():
    one_episode = load_config("smoke", ["data.episodes=1"])
    with pytest.raises(preflight.DatasetMismatch) as info:
        preflight.check_config(one_episode, "autoencoder")
    message = str(info.value)
    assert "data.episodes=1" in message and "(1 train, 0 val, 0 test episodes)" in message
    assert "the val split has no episodes, and the autoencoder's held-out evaluation needs one" in message
    # no split fraction can give one episode to three splits: the hint says so, not "raise data.split.val"
    assert "the dataset has 1 episode(s) in all, fewer than its 3 splits; raise data.episodes" in message
    few = load_config("smoke", ["data.episodes=5", "data.split.val=0.0", "data.split.test=0.2"])
    with pytest.raises(preflight.DatasetMismatch, match=r"raise data.episodes or data.split.val"):
        preflight.check_config(few, "autoencoder")  # 5 episodes could fill every split: the fraction can help
    assert message.count("the val split has no episodes") == 1  # however many stages need it

    short = load_config("smoke", ["data.frames=30"])
    preflight.check_config(short, "autoencoder")  # 30-frame episodes are plenty for the autoencoder
    with pytest.raises(preflight.DatasetMismatch) as info:
        preflight.check_config(short, "report")
    message = str(info.value)
    assert ("the longest train episode has 30 frames, and diffusion:millivid's training (clips of its schedule's span) "
            "needs 85 frames: raise data.frames or choose a shorter schedule in diffusion.methods.millivid") in message
    assert ("the evaluation (windows of eval.context + eval.rollout) needs 40 frames: "
            "raise data.frames or lower eval.context or eval.rollout") in message
    preflight.check_config(short, "diffusion", ["full_res"])  # a 7-frame schedule fits


def test_an_imported_dataset_is_checked_once_it_exists(tmp_path):
    uri = str(tmp_path / "ds")
    import_dataset(short_episodes(tmp_path / "src"), uri)
    config = load_config("smoke", ["data.source=import", f"data.import_uri={tmp_path / 'src'}"])
    preflight.check_config(config, "report")  # nothing to say before the import
    preflight.check_dataset(config, uri, "encode")
    with pytest.raises(preflight.DatasetMismatch) as info:
        preflight.check_dataset(config, uri, "diffusion")
    message = str(info.value)
    assert message.startswith(f"dataset {uri} (imported from data.import_uri {tmp_path / 'src'}) does not fit the stages that would run")
    assert "the longest train episode has 10 frames" in message and "import longer episodes" in message


def test_a_missing_import_folder_is_named_before_anything_runs(tmp_path):
    config = load_config("smoke", ["data.source=import", f"data.import_uri={tmp_path / 'nothing'}"])
    with pytest.raises(ConfigError, match="data.import_uri: .*nothing does not exist"):
        preflight.check_config(config, "data")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--methods", "nope"], "error: --methods: 'nope' not in diffusion.methods"),
        (["data.episodes=1"], "the val split has no episodes"),
        (["--until", "diffusion", "data.frames=30"], "the longest train episode has 30 frames"),
    ],
)
def test_pipeline_command_stops_before_any_stage(capsys, workspace, arguments, expected):
    started = time.perf_counter()
    assert main(["pipeline", "--config", "smoke", *arguments]) == 2
    assert expected in capsys.readouterr().err
    assert time.perf_counter() - started < 30
    assert not (workspace / "mlflow.db").exists()  # no stage, not even the pipeline's run, started


@pytest.mark.integration
@pytest.mark.slow
def test_short_imported_episodes_stop_after_the_data_stage_without_a_traceback(tmp_path, workspace):
    """Six 10-frame episodes: once imported, the pipeline stops with one error line, long before training."""
    source = short_episodes(tmp_path / "src")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "millivid_cli.main", "pipeline", "--config", "smoke", "data.source=import",
         f"data.import_uri={source}"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: dataset " in result.stderr and "the longest train episode has 10 frames" in result.stderr
    assert time.perf_counter() - started < 180
