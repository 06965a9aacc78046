import io

import numpy as np
import pytest
from einops import reduce

from millivid import storage
from millivid.data.columns import DataError
from millivid.data.importers import import_dataset, parse_action_map, square
from millivid.data.preview import video_bytes
from millivid.data.reader import open_dataset


def smooth_video(seed: int, length: int, side: int) -> np.ndarray:
    """(t side side 3) uint8 moving colour gradients: survive lossy video coding well."""
    y, x = np.mgrid[0:side, 0:side] / side
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    t = np.arange(length)[:, None, None, None] / length
    channels = np.stack([x, y, (x + y) / 2], axis=-1)[None]
    return (127 + 100 * np.sin(4 * channels + phase + 3 * t)).astype(np.uint8)


def write_npz(uri: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(uri, buffer.getvalue())


@pytest.fixture
def source(storage_root):
    """Where the episodes to import are written: on the local disk and on the in-memory filesystem."""
    return storage_root


def test_import_npz_episodes_with_resize_and_action_map(source, tmp_path):
    videos = {f"ep{i}": smooth_video(i, 12 + i, 32) for i in range(3)}
    for name, video in videos.items():
        write_npz(storage.join(source, f"{name}.npz"), video=video, actions=np.arange(len(video)) % 2 + 3)
    manifest = import_dataset(source, str(tmp_path / "ds"), size=16, action_map=parse_action_map("3:0,4:1"))
    assert manifest.pose_known is False and manifest.meta["source"] == "import"
    dataset = open_dataset(str(tmp_path / "ds"))
    assert sorted(dataset.episodes()) == ["ep0", "ep1", "ep2"]
    got = dataset.read("ep1")
    assert got["frames"].shape == (13, 16, 16, 3)
    area_mean = reduce(videos["ep1"].astype(np.float32), "t (h a) (w b) c -> t h w c", "mean", a=2, b=2)
    assert np.abs(got["frames"] - area_mean).max() <= 0.5
    np.testing.assert_array_equal(got["actions"], np.arange(13) % 2)
    assert np.isnan(got["pose"]).all()
    dataset.verify()


def test_import_keeps_poses_where_episodes_have_them(source, tmp_path):
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(10, 5))  # float64 in the source: stored as float32
    write_npz(storage.join(source, "with.npz"), video=smooth_video(0, 10, 16), actions=np.zeros(10, int), poses=poses)
    write_npz(storage.join(source, "without.npz"), video=smooth_video(1, 8, 16), actions=np.zeros(8, int))
    manifest = import_dataset(source, str(tmp_path / "ds"))
    assert manifest.pose_known is True
    dataset = open_dataset(str(tmp_path / "ds"))
    np.testing.assert_array_equal(dataset.read("with", columns=["pose"])["pose"], poses.astype(np.float32))
    assert np.isnan(dataset.read("without", columns=["pose"])["pose"]).all()


@pytest.mark.parametrize("poses", [np.zeros((10, 3)), np.zeros((9, 5)), np.zeros((10, 5), np.int64)])
def test_import_names_the_file_with_bad_poses(source, tmp_path, poses):
    write_npz(storage.join(source, "bad.npz"), video=smooth_video(0, 10, 16), actions=np.zeros(10, int), poses=poses)
    with pytest.raises(DataError, match=r"bad\.npz: poses are .* expected float \(10, 5\)"):
        import_dataset(source, str(tmp_path / "ds"))
    assert not storage.exists(str(tmp_path / "ds"))


def test_import_mp4_with_actions_npz(source, tmp_path):
    video = smooth_video(0, 20, 32)
    storage.write_bytes(storage.join(source, "run", "episode.mp4"), video_bytes(video, ".mp4"))
    write_npz(storage.join(source, "run", "episode.npz"), actions=np.full(20, 2))
    import_dataset(source, str(tmp_path / "ds"))
    dataset = open_dataset(str(tmp_path / "ds"))
    assert dataset.episodes() == ["run/episode"]
    frames = dataset.read("run/episode")["frames"]
    assert frames.shape == video.shape
    assert np.abs(frames.astype(np.float32) - video).mean() < 8  # lossy H.264 round trip


def test_square_crops_centre_and_area_averages():
    wide = np.zeros((1, 4, 8, 3), np.uint8)
    wide[:, :, 2:6] = 200
    assert (square(wide, None) == 200).all()
    odd = square(np.full((2, 30, 30, 3), 90, np.uint8), 16)
    assert odd.shape == (2, 16, 16, 3) and (odd == 90).all()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"video": np.zeros((5, 8, 8, 3), np.uint8)}, "no 'actions' array"),
        ({"actions": np.zeros(5, np.int64)}, "no 'video' array"),
        ({"video": np.zeros((5, 8, 8, 3), np.uint8), "actions": np.zeros(4, np.int64)}, "4 actions for 5 frames"),
        ({"video": np.zeros((5, 8, 8, 3), np.uint8), "actions": np.full(5, 7)}, r"unknown action ids \[7\].*--action-map"),
        ({"video": np.zeros((5, 8, 8), np.uint8), "actions": np.zeros(5, np.int64)}, r"expected uint8 \(T, H, W, 3\)"),
        ({"video": np.zeros((5, 8, 8, 3), np.float32), "actions": np.zeros(5, np.int64)}, "float32"),
    ],
)
def test_bad_episodes_name_the_file(tmp_path, arrays, message):
    write_npz(str(tmp_path / "src" / "broken.npz"), **arrays)
    with pytest.raises(DataError, match=message) as err:
        import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert "broken.npz" in str(err.value)
    assert not storage.exists(str(tmp_path / "ds" / "manifest.json"))


def test_unreadable_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no episodes found"):
        import_dataset(str(tmp_path / "empty"), str(tmp_path / "ds"))
    with pytest.raises(DataError, match="no such folder"):
        import_dataset(str(tmp_path / "missing"), str(tmp_path / "ds"))
    storage.write_bytes(str(tmp_path / "corrupt" / "a.npz"), b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="a.npz: not a readable .npz"):
        import_dataset(str(tmp_path / "corrupt"), str(tmp_path / "ds"))
    storage.write_bytes(str(tmp_path / "orphan" / "b.mp4"), b"\x00")
    with pytest.raises(DataError, match="b.mp4: no b.npz"):
        import_dataset(str(tmp_path / "orphan"), str(tmp_path / "ds"))
    storage.write_bytes(str(tmp_path / "badvideo" / "c.mp4"), b"\x00" * 100)
    write_npz(str(tmp_path / "badvideo" / "c.npz"), actions=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="c.mp4: cannot decode video"):
        import_dataset(str(tmp_path / "badvideo"), str(tmp_path / "ds"))


def test_mixed_sizes_need_a_size(tmp_path):
    write_npz(str(tmp_path / "src" / "a.npz"), video=np.zeros((3, 8, 8, 3), np.uint8), actions=np.zeros(3, np.int64))
    write_npz(str(tmp_path / "src" / "b.npz"), video=np.zeros((3, 16, 16, 3), np.uint8), actions=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="b.npz: frames are 16 pixels.*--size"):
        import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"), size=8).frame_size == (8, 8)


def test_parse_action_map():
    assert parse_action_map("3:0, 4:1") == {3: 0, 4: 1}
    assert parse_action_map("") == {}
    with pytest.raises(DataError, match="'3-0'"):
        parse_action_map("3-0")


def test_every_skipped_file_is_reported(source, tmp_path, caplog):
    write_npz(storage.join(source, "a.npz"), video=smooth_video(0, 6, 16), actions=np.zeros(6, int))
    storage.write_bytes(storage.join(source, "notes.txt"), b"camera log")
    storage.write_bytes(storage.join(source, "b.avi"), b"\x00")
    with caplog.at_level("WARNING", logger="millivid.data.importers"):
        manifest = import_dataset(source, str(tmp_path / "ds"))
    skipped = manifest.meta["skipped_files"]
    assert sorted(name.rsplit("/", 1)[-1] for name in skipped) == ["b.avi", "notes.txt"]
    assert all(reason == "neither NAME.npz nor NAME.mp4" for reason in skipped.values())
    assert all(any(name in record.getMessage() and "skipped" in record.getMessage() for record in caplog.records) for name in skipped)


def test_an_episode_with_two_videos_is_refused(tmp_path):
    write_npz(str(tmp_path / "src" / "e.npz"), video=smooth_video(0, 6, 16), actions=np.zeros(6, int))
    storage.write_bytes(str(tmp_path / "src" / "e.mp4"), video_bytes(smooth_video(1, 6, 16), ".mp4"))
    with pytest.raises(DataError, match=r"e\.npz: holds a 'video' array and .*e\.mp4 is next to it: .* ambiguous"):
        import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))


def test_infinite_poses_are_rejected_naming_the_file(tmp_path):
    poses = np.zeros((10, 5))
    poses[4, 1] = np.inf
    write_npz(str(tmp_path / "src" / "far.npz"), video=smooth_video(0, 10, 16), actions=np.zeros(10, int), poses=poses)
    with pytest.raises(DataError, match=r"far\.npz: poses of 1 frame\(s\) are infinite \(first: frame 4\)"):
        import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))


def test_partly_unknown_poses_are_counted_and_warned_about(tmp_path, caplog):
    poses = np.random.default_rng(0).normal(size=(10, 5))
    poses[[2, 3, 7], 0] = np.nan
    write_npz(str(tmp_path / "src" / "some.npz"), video=smooth_video(0, 10, 16), actions=np.zeros(10, int), poses=poses)
    write_npz(str(tmp_path / "src" / "none.npz"), video=smooth_video(1, 6, 16), actions=np.zeros(6, int))
    with caplog.at_level("WARNING", logger="millivid.data.importers"):
        manifest = import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert manifest.pose_known and manifest.pose_unknown_frames == 3 + 6
    assert any("9 of 16 frames have no known camera pose" in record.getMessage() for record in caplog.records)


def test_an_empty_split_is_warned_about(tmp_path, caplog):
    write_npz(str(tmp_path / "src" / "only.npz"), video=smooth_video(0, 6, 16), actions=np.zeros(6, int))
    with caplog.at_level("WARNING", logger="millivid.data.importers"):
        manifest = import_dataset(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert manifest.counts["val"] == manifest.counts["test"] == 0
    assert any("the val and test split(s) came out empty" in record.getMessage() for record in caplog.records)


def test_replacing_a_dataset_keeps_the_old_one_readable_until_the_new_one_is_complete(tmp_path):
    out = str(tmp_path / "ds")
    write_npz(str(tmp_path / "a" / "old.npz"), video=smooth_video(0, 6, 16), actions=np.zeros(6, int))
    import_dataset(str(tmp_path / "a"), out)
    for name in ("new-1", "new-2"):
        write_npz(str(tmp_path / "b" / f"{name}.npz"), video=smooth_video(1, 8, 16), actions=np.ones(8, int))
    seen_while_importing = []
    import_dataset(str(tmp_path / "b"), out, progress=lambda done, total: seen_while_importing.append(
        (open_dataset(out).episodes(), open_dataset(out).read("old")["frames"].shape)))
    assert seen_while_importing == [(["old"], (6, 16, 16, 3))] * 2
    assert open_dataset(out).episodes() == ["new-1", "new-2"]


def test_the_data_stage_skips_the_path_of_an_episode_imported_without_poses(tmp_path, mlflow_store, settings, caplog):
    """The previewed (first test) episode has no poses while another has: no path picture, no failure."""
    import mlflow

    from millivid.data.config import DataConfig
    from millivid_platform import data_stage, tracking
    from millivid_platform.stages import StageRun

    source = tmp_path / "src"
    write_npz(str(source / "b-with.npz"), video=smooth_video(0, 6, 16), actions=np.zeros(6, int), poses=np.zeros((6, 5)))
    write_npz(str(source / "a-without.npz"), video=smooth_video(1, 6, 16), actions=np.zeros(6, int))
    cfg = DataConfig(source="import", import_uri=str(source), size=16, split={"val": 0, "test": 0.5})
    run_id = tracking.create_run(mlflow_store, "data", "data")
    with caplog.at_level("WARNING", logger="millivid_platform.data_stage"):
        outputs = data_stage.prepare(StageRun("data", "key", run_id, settings, "0"), cfg)
    assert open_dataset(outputs["dataset_uri"]).episodes("test") == ["a-without"]
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "dataset")}
    assert {"dataset/preview.png", "dataset/preview.gif"} <= logged and "dataset/path.png" not in logged
    assert any("no path.png" in record.getMessage() for record in caplog.records)
