"""PNG pictures from uint8 frames: grids (rows x columns of frames) and strips (one row).

    png_bytes(grid(frames))        # frames: (rows cols h w 3) uint8
    png_bytes(strip(frames), scale=4)
"""

from __future__ import annotations

import io

import numpy as np
from einops import rearrange, repeat
from PIL import Image

BORDER = 255  # white gutters between frames


def grid(frames: np.ndarray, gap: int = 1) -> np.ndarray:
    """(rows cols h w 3) uint8 -> one (H W 3) uint8 image with `gap`-pixel gutters between frames."""
    frames = _check_uint8(frames, "rows cols h w 3", 5)
    padded = np.pad(frames, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=BORDER)
    image = rearrange(padded, "rows cols h w c -> (rows h) (cols w) c")
    return image[: image.shape[0] - gap, : image.shape[1] - gap] if gap else image


def strip(frames: np.ndarray, gap: int = 1) -> np.ndarray:
    """(n h w 3) uint8 -> one row of frames."""
    return grid(rearrange(_check_uint8(frames, "n h w 3", 4), "n h w c -> 1 n h w c"), gap)


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """(H W 3) uint8 -> PNG bytes; `scale` enlarges by pixel repetition (tiny frames stay crisp)."""
    image = _check_uint8(image, "H W 3", 3)
    if scale > 1:
        image = repeat(image, "h w c -> (h s) (w t) c", s=scale, t=scale)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def _check_uint8(array: np.ndarray, layout: str, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != ndim or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 ({layout}), got {array.dtype} {array.shape}")
    return array
