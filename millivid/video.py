"""Videos from uint8 frames: MP4 (H.264 through PyAV, MPEG-4 part 2 where libx264 is missing) or GIF.

    write_video("run/rollout.mp4", frames, fps=8, scale=4)     # frames: (t h w 3) uint8
    write_video("memory://x/rollout.gif", side_by_side([as_video(truth), as_video(result.frames[0])], ["truth", "millivid"]))

Files are encoded in memory and published atomically (millivid.storage), on any fsspec URI.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image, ImageDraw

from millivid import images, storage

MP4_CODECS = ("libx264", "mpeg4")
LABEL_HEIGHT = 12
GUTTER = 255  # white between videos


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
        raise ValueError(f"{name} must be uint8 (t h w 3) with t >= 1, got {frames.dtype} {frames.shape}")
    return frames


def as_video(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Decoded frames (t 3 h w) float in [0, 1] (what the autoencoder's decode returns) -> (t h w 3) uint8."""
    frames = frames.detach().float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected decoded frames (t 3 h w), got shape {frames.shape}")
    return images.to_uint8(rearrange(frames, "t c h w -> t h w c"))


def write_video(uri: str, frames: np.ndarray, fps: float = 8, scale: int = 1) -> None:
    """Write (t h w 3) uint8 frames as .mp4 or .gif (by extension), enlarged `scale` times (nearest)."""
    frames = check_frames(frames)
    if scale > 1:
        frames = repeat(frames, "t h w c -> t (h s) (w r) c", s=scale, r=scale)
    suffix = uri.rsplit(".", 1)[-1].lower()
    if suffix == "mp4":
        data = mp4_bytes(frames, fps)
    elif suffix == "gif":
        data = gif_bytes(frames, fps)
    else:
        raise ValueError(f"{uri}: unknown video extension {suffix!r}; use .mp4 or .gif")
    storage.write_bytes(uri, data)


def mp4_codec() -> str:
    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    raise RuntimeError(f"PyAV has none of the MP4 encoders {MP4_CODECS}")


def mp4_bytes(frames: np.ndarray, fps: float) -> bytes:
    """yuv420p needs even sides: odd frames get their last row/column repeated."""
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(mp4_codec(), rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    pictures = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


def side_by_side(videos: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 2) -> np.ndarray:
    """Videos (t h w 3) uint8 of equal length and height, left to right with white gutters; optional
    labels in a white band on top. Returns (t H W 3) uint8."""
    videos = [check_frames(video, f"video {i}") for i, video in enumerate(videos)]
    if len({video.shape[:2] for video in videos}) != 1:
        raise ValueError(f"videos must share length and height, got shapes {[video.shape for video in videos]}")
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"{len(labels)} labels for {len(videos)} videos")
    length, height = videos[0].shape[:2]
    gutter = np.full((length, height, gap, 3), GUTTER, dtype=np.uint8)
    pieces = [piece for video in videos for piece in (video, gutter)][:-1]
    joined = np.concatenate(pieces, axis=2)
    if labels is None:
        return joined
    offsets = np.cumsum([0] + [video.shape[2] + gap for video in videos[:-1]])
    band = label_band(labels, offsets, joined.shape[2])
    return np.concatenate([repeat(band, "h w c -> t h w c", t=length), joined], axis=1)


def label_band(labels: Sequence[str], offsets: Sequence[int], width: int) -> np.ndarray:
    """(LABEL_HEIGHT width 3) white band with each label written at its video's left edge."""
    band = Image.new("RGB", (width, LABEL_HEIGHT), (GUTTER,) * 3)
    draw = ImageDraw.Draw(band)
    for label, offset in zip(labels, offsets, strict=True):
        draw.text((int(offset) + 1, 0), label, fill=(0, 0, 0))
    return np.asarray(band)


def read_video(uri: str) -> np.ndarray:
    """Decode a video file (any format PyAV reads) back to (t h w 3) uint8; for checks and tests."""
    with av.open(io.BytesIO(storage.read_bytes(uri))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack(frames)
