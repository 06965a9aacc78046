"""Pictures of a dataset: a grid of frames (PNG), a video (MP4, GIF), or the camera's path (PNG)."""

from __future__ import annotations

import io
import logging
import math

import av
import numpy as np
from einops import rearrange, repeat
from PIL import Image

from millivid import storage
from millivid.data.columns import DataError
from millivid.data.reader import Dataset, open_dataset
from millivid.pose import YAW, X, Z, known

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")
MIN_PREVIEW_SIDE = 128  # small frames are enlarged (nearest neighbour) to at least this many pixels


def grid(frames: np.ndarray, columns: int = 8) -> np.ndarray:
    """(n h w 3) -> one (rows*h, columns*w, 3) image, padded with black."""
    columns = min(columns, len(frames))
    rows = math.ceil(len(frames) / columns)
    padded = np.zeros((rows * columns, *frames.shape[1:]), np.uint8)
    padded[: len(frames)] = frames
    return rearrange(padded, "(r c) h w ch -> (r h) (c w) ch", c=columns)


def enlarge(frames: np.ndarray) -> np.ndarray:
    factor = max(1, math.ceil(MIN_PREVIEW_SIDE / frames.shape[1]))
    return repeat(frames, "n h w c -> n (h a) (w b) c", a=factor, b=factor)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def video_bytes(frames: np.ndarray, suffix: str, fps: int = 15) -> bytes:
    """(t h w 3) uint8 frames as an MP4 (H.264) or GIF file."""
    buffer = io.BytesIO()
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return buffer.getvalue()
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # yuv420 needs even sides
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def pick_episode(dataset: Dataset, episode: str | None) -> str:
    if episode is not None:
        if episode not in dataset.by_id:
            raise DataError(f"{dataset.uri}: no episode {episode!r}; e.g. {', '.join(dataset.episodes()[:3])}")
        return episode
    return (dataset.episodes("test") or dataset.episodes())[0]


def path_image(pose: np.ndarray, side: int = 512) -> np.ndarray:
    """(side side 3) top-down plot of the camera path, coloured from start (dark) to end (yellow)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ground, yaw = pose[:, [X, Z]], pose[:, YAW]
    figure, axes = plt.subplots(figsize=(side / 100, side / 100), dpi=100)
    axes.scatter(ground[:, 0], ground[:, 1], c=np.arange(len(pose)), cmap="viridis", s=4)
    axes.quiver(ground[::16, 0], ground[::16, 1], np.cos(yaw[::16]), np.sin(yaw[::16]), angles="xy", width=0.003, alpha=0.5)
    axes.plot(*ground[0], "go", label="start")
    axes.plot(*ground[-1], "rs", label="end")
    centre = (ground.max(axis=0) + ground.min(axis=0)) / 2
    half = np.ptp(ground, axis=0).max() / 2 + 2
    axes.set_xlim(centre[0] - half, centre[0] + half)
    axes.set_ylim(centre[1] + half, centre[1] - half)  # z grows downwards, as in the world's map
    axes.set_aspect("equal")  # z grows downwards, as in the world's map
    axes.set_xlabel("x (blocks)")
    axes.set_ylabel("z (blocks)")
    axes.legend(loc="best", fontsize=7)
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


def preview(
    uri: str, out: str, *, episode: str | None = None, frames: int | None = None, start: int = 0, every: int | None = None
) -> str:
    """Write a picture of one episode to `out` (.png grid, .mp4/.gif video, or `*path.png` for the
    camera path); returns the episode id. Grids default to 16 frames evenly spread over the
    episode, videos to every frame from `start`."""
    dataset = open_dataset(uri)
    episode = pick_episode(dataset, episode)
    length = dataset.length(episode)
    suffix = "." + out.rsplit(".", 1)[-1].lower() if "." in out else ""
    if suffix not in (".png", *VIDEO_SUFFIXES):
        raise DataError(f"{out}: unknown picture type; use .png (grid), .mp4 or .gif (video)")
    if not 0 <= start < length:
        raise DataError(f"{uri}: episode {episode!r} has {length} frames; start {start} is outside it")
    if out.endswith("path.png"):
        pose = dataset.read(episode, columns=["pose"])["pose"]
        seen = known(pose)
        if not seen.any():
            raise DataError(f"{uri}: episode {episode!r} has no known camera pose (imported without poses), so no path to draw")
        if not seen.all():
            log.warning("%s: episode %r: %d of its %d frames have no known camera pose; the path shows the other %d",
                        uri, episode, int((~seen).sum()), length, int(seen.sum()))
        storage.write_bytes(out, png_bytes(path_image(pose[seen])))
        return episode
    video = suffix in VIDEO_SUFFIXES
    every = every or (1 if video else max(1, (length - start) // (frames or 16)))
    count = frames or ((length - start + every - 1) // every if video else 16)
    indices = np.arange(start, length, every)[:count]
    clip = dataset.read(episode, int(indices[0]), int(indices[-1]) + 1, columns=["frames"])["frames"][indices - indices[0]]
    picture = video_bytes(enlarge(clip), suffix) if video else png_bytes(grid(enlarge(clip)))
    storage.write_bytes(out, picture)
    return episode
