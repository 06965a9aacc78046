"""Side-by-side videos and strips of a few examples: ground truth | each method.

The video plays the last context frames (every column shows the given context) and then the
rollout (each method's column shows what it generated). The strip is a PNG grid: one row per
column of the video (ground truth first), evenly spaced rollout frames left to right.

    frames = showcase_video(example_frames, names)      # (t H W 3) uint8
    picture = showcase_strip(example_frames, names)     # PNG bytes
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from einops import repeat

from millivid.eval.config import GROUND_TRUTH
from millivid.images import grid, png_bytes
from millivid.video import side_by_side

VIDEO_SIDE = 96  # tiny frames are enlarged so the labels above them stay readable
STRIP_COLUMNS = 12


def enlarge(frames: np.ndarray, side: int = VIDEO_SIDE) -> np.ndarray:
    scale = max(1, side // frames.shape[1])
    return repeat(frames, "t h w c -> t (h s) (w r) c", s=scale, r=scale)


def showcase_video(frames: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """frames[GROUND_TRUTH]: (k+R h w 3) the last k context frames, then the rollout's ground truth;
    frames[name]: (R h w 3) generated, for each of the (non-empty) names -> (k+R H W 3) uint8."""
    truth = frames[GROUND_TRUTH]
    context = truth[: len(truth) - len(frames[names[0]])]
    columns = [truth] + [np.concatenate([context, frames[name]]) for name in names]
    return side_by_side([enlarge(column) for column in columns], [GROUND_TRUTH, *names])


def showcase_strip(frames: dict[str, np.ndarray], names: Sequence[str], columns: int = STRIP_COLUMNS) -> bytes:
    rollout = len(frames[names[0]])
    truth = frames[GROUND_TRUTH][len(frames[GROUND_TRUTH]) - rollout :]
    picks = np.unique(np.linspace(0, rollout - 1, min(columns, rollout)).round().astype(int))
    rows = np.stack([truth[picks]] + [frames[name][picks] for name in names])
    return png_bytes(grid(rows), scale=max(1, 48 // truth.shape[1]))
