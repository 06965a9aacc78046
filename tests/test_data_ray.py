import numpy as np
import pytest

from millivid.data.columns import frame_columns
from millivid.data.reader import open_dataset
from millivid.data.writer import write_dataset


@pytest.mark.integration
def test_ray_dataset_yields_the_split_frames_as_torch_batches(ray_session, tmp_path):
    from millivid_platform.datasets import ray_dataset

    rng = np.random.default_rng(0)
    episodes = [
        (f"e{i}", {"frames": rng.integers(0, 256, (25, 8, 8, 3), dtype=np.uint8), "actions": rng.integers(0, 3, 25).astype(np.int8),
                   "pose": rng.normal(size=(25, 5)).astype(np.float32)})
        for i in range(5)
    ]
    uri = str(tmp_path / "ds")
    write_dataset(uri, episodes, frame_columns(8), shard_frames=60)
    store = open_dataset(uri)
    batches = list(ray_dataset(uri, "train", columns=["frames", "actions"]).iter_torch_batches(batch_size=16))
    assert {tuple(b) for b in batches} == {("episode_index", "frame", "frames", "actions")}
    frames = np.concatenate([b["frames"].numpy() for b in batches])
    assert frames.shape == (25 * len(store.episodes("train")), 8, 8, 3) and frames.dtype == np.uint8
    where = np.concatenate([np.stack([b["episode_index"].numpy(), b["frame"].numpy()], 1) for b in batches])
    for (episode, frame), pixels in zip(where, frames, strict=True):
        entry = store.manifest.episodes[episode]
        assert entry.split == "train"
        np.testing.assert_array_equal(pixels, episodes[int(entry.id[1:])][1]["frames"][frame])


def test_ray_dataset_refuses_a_damaged_shard(tmp_path):
    """Checked before Ray Data reads anything, as every read of the store is."""
    from millivid import storage
    from millivid.data.columns import DataError
    from millivid_platform.datasets import ray_dataset

    rng = np.random.default_rng(0)
    episode = {"frames": rng.integers(0, 256, (25, 8, 8, 3), dtype=np.uint8), "actions": np.zeros(25, np.int8),
               "pose": np.zeros((25, 5), np.float32)}
    uri = str(tmp_path / "ds")
    write_dataset(uri, [("e0", episode)], frame_columns(8), compression="none")
    shard = storage.join(uri, open_dataset(uri).manifest.shards[0].path)
    data = bytearray(storage.read_bytes(shard))
    data[len(data) // 2] ^= 1
    storage.write_bytes(shard, bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        ray_dataset(uri, None)
