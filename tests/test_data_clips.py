import numpy as np
import pytest

from millivid.data.clips import ClipLoader
from millivid.data.columns import ColumnSpec, DataError, frame_columns
from millivid.data.config import SplitConfig
from millivid.data.reader import open_dataset
from millivid.data.writer import write_dataset


def counting_episode(first: int, length: int) -> dict[str, np.ndarray]:
    """Frames whose pixels hold their global frame number, so a clip shows where it came from."""
    numbers = np.arange(first, first + length)
    return {
        "frames": np.broadcast_to((numbers % 256).astype(np.uint8)[:, None, None, None], (length, 4, 4, 3)).copy(),
        "actions": (numbers % 3).astype(np.int8),
        "pose": np.stack([numbers] * 5, axis=1).astype(np.float32),
    }


@pytest.fixture
def dataset(tmp_path):
    uri = str(tmp_path / "ds")
    lengths = [20, 35, 50, 9]
    firsts = np.cumsum([0, *lengths[:-1]])
    write_dataset(uri, [(f"e{i}", counting_episode(int(f), n)) for i, (f, n) in enumerate(zip(firsts, lengths, strict=True))],
                  frame_columns(4), split=SplitConfig(val=0, test=0), row_group_frames=8)
    return open_dataset(uri)


def test_batches_are_a_pure_function_of_seed_and_index(dataset):
    a = ClipLoader(dataset, length=6, batch_size=5, stride=2, seed=1)
    b = ClipLoader(open_dataset(dataset.uri), length=6, batch_size=5, stride=2, seed=1)
    for index in (0, 7, 123):
        first, second = a.batch(index), b.batch(index)
        assert first.keys() == second.keys() == {"frames", "actions", "pose"}
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(a.batch(0)["pose"], a.batch(1)["pose"])
    assert not np.array_equal(a.batch(0)["pose"], ClipLoader(dataset, 6, 5, stride=2, seed=2).batch(0)["pose"])


def test_clips_are_strided_runs_inside_one_episode(dataset):
    loader = ClipLoader(dataset, length=6, batch_size=64, stride=3, columns=["pose", "actions"])
    batch = loader.batch(0)
    assert batch["pose"].shape == (64, 6, 5) and batch["actions"].shape == (64, 6)
    numbers = batch["pose"][..., 0]
    np.testing.assert_array_equal(np.diff(numbers, axis=1), 3)  # consecutive frames 3 apart: never across episodes
    assert "e3" not in loader.episodes  # 9 frames < span 16
    assert loader.clips == (20 - 15) + (35 - 15) + (50 - 15)


def test_every_clip_start_is_reachable(dataset):
    loader = ClipLoader(dataset, length=4, batch_size=1)
    starts = {loader.positions(np.random.default_rng(i), 1)[0] for i in range(3000)}
    assert len(starts) == loader.clips


def test_sample_with_generator_and_latent_columns(tmp_path):
    columns = {"latent_0": ColumnSpec(dtype="float16", shape=(16, 8)), "actions": ColumnSpec(dtype="int8")}
    latents = np.random.default_rng(0).normal(size=(40, 16, 8)).astype(np.float16)
    write_dataset(str(tmp_path / "lat"), [("a", {"latent_0": latents, "actions": np.zeros(40, np.int8)})], columns,
                  split=SplitConfig(val=0, test=0), kind="latents")
    loader = ClipLoader(open_dataset(str(tmp_path / "lat")), length=10, batch_size=3)
    batch = loader.sample(np.random.default_rng(5), 2)
    assert batch["latent_0"].shape == (2, 10, 16, 8) and batch["latent_0"].dtype == np.float16
    episode, start = loader.positions(np.random.default_rng(5), 2)[0]
    np.testing.assert_array_equal(batch["latent_0"][0], latents[start : start + 10])


def test_no_episode_long_enough(dataset):
    with pytest.raises(DataError, match="no train episode has the 60 frames"):
        ClipLoader(dataset, length=60, batch_size=2)
    with pytest.raises(ValueError, match="unknown split"):
        ClipLoader(dataset, length=2, batch_size=2, split="holdout")
