"""Rollout videos: MP4 / GIF written atomically on any fsspec URI, and side-by-side comparisons."""

import numpy as np
import pytest
import torch

from millivid import storage
from millivid.video import as_video, read_video, side_by_side, write_video


def ramp(frames: int = 6, height: int = 8, width: int = 10) -> np.ndarray:
    """Frames that differ from each other: a brightness ramp over time in the red channel."""
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    video[..., 0] = np.linspace(0, 250, frames, dtype=np.uint8)[:, None, None]
    video[..., 1] = 100
    return video


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_write_video_round_trips_and_leaves_no_temporary_file(tmp_path, suffix):
    uri = str(tmp_path / f"clip.{suffix}")
    frames = ramp()
    write_video(uri, frames, fps=5, scale=2)
    decoded = read_video(uri)
    assert decoded.shape == (6, 16, 20, 3)
    assert np.abs(decoded[:, ::2, ::2].astype(int) - frames.astype(int)).max() <= 12  # lossy codecs
    assert [path.name for path in tmp_path.iterdir()] == [f"clip.{suffix}"]


def test_mp4_pads_odd_sides_and_works_on_memory_uris():
    write_video("memory://videos/odd.mp4", ramp(height=7, width=9), fps=8)
    assert read_video("memory://videos/odd.mp4").shape == (6, 8, 10, 3)
    storage.remove("memory://videos", recursive=True)


def test_write_video_rejects_bad_input_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(str(tmp_path / "a.mp4"), ramp().astype(np.float32))
    with pytest.raises(ValueError, match="extension"):
        write_video(str(tmp_path / "a.avi"), ramp())
    assert list(tmp_path.iterdir()) == []


def test_side_by_side_joins_videos_with_gutters_and_labels():
    left, right = ramp(), 255 - ramp()
    joined = side_by_side([left, right], gap=3)
    assert joined.shape == (6, 8, 23, 3)
    assert np.array_equal(joined[:, :, :10], left) and np.array_equal(joined[:, :, 13:], right)
    assert (joined[:, :, 10:13] == 255).all()
    labelled = side_by_side([left, right], ["truth", "rollout"], gap=3)
    assert labelled.shape[1] > 8 and np.array_equal(labelled[:, -8:], joined)
    assert (labelled[0, : labelled.shape[1] - 8] < 255).any()  # some text was drawn
    with pytest.raises(ValueError, match="share length and height"):
        side_by_side([left, ramp(frames=5)])


def test_as_video_turns_decoded_frames_into_uint8():
    decoded = torch.zeros(2, 3, 4, 5)
    decoded[1, 0] = 1.0
    decoded[0, 2] = 0.5
    video = as_video(decoded)
    assert video.shape == (2, 4, 5, 3) and video.dtype == np.uint8
    assert (video[1, ..., 0] == 255).all() and (video[0, ..., 2] == 128).all() and (video[0, ..., 0] == 0).all()
    with pytest.raises(ValueError, match="t 3 h w"):
        as_video(torch.zeros(2, 4, 5, 3))
