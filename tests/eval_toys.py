"""The toy evaluation world shared by the evaluation tests: six short episodes (a walk, then a turn
on the spot, so views come back), their toy latents (the frames mean-pooled per level), a decoder
that undoes the pooling, and the evaluation config sized for them."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange, reduce, repeat
from toys import TOKENS

from millivid.data.columns import ColumnSpec, frame_columns
from millivid.data.config import SplitConfig
from millivid.data.reader import open_dataset
from millivid.data.writer import write_dataset
from millivid.eval.config import EvalConfig
from millivid.eval.protocol import EvalData
from millivid.pose import camera_pose

SIZE, EPISODE, WALK, TURN = 16, 64, 24, 8
TOY_EVAL = EvalConfig(
    examples=4, context=8, rollout=8, bootstrap=50, fvd_chunk=4, lpips_backbone="random", rollout_batch=3,
    videos=1, video_context=4, candidates=64, min_start_gap=4, revisit_radius=0.5, revisit_angle=20, revisit_min_gap=6,
)


def episode(seed: int) -> dict[str, np.ndarray]:
    t = np.arange(EPISODE)
    x = 0.2 * np.minimum(t, WALK)
    heading = np.maximum(t - WALK, 0) % TURN
    pose = camera_pose(x, 1.6, 0.0, heading * 2 * np.pi / TURN, 0.0)
    blocks = np.random.default_rng(seed).integers(0, 256, (TURN, 4, 4, 3), dtype=np.uint8)
    views = repeat(blocks, "v h w c -> v (h 4) (w 4) c")
    frames = np.stack([np.roll(views[h], int(round(5 * xi)), axis=1) for h, xi in zip(heading, x, strict=True)])
    actions = np.where(t < WALK, 0, 2).astype(np.int8)
    return {"frames": frames, "actions": actions, "pose": pose}


def toy_latents(frames: np.ndarray) -> dict[str, np.ndarray]:
    unit = frames.astype(np.float32) / 255
    return {
        f"latent_{level}": reduce(unit, "t (h p) (w q) c -> t (h w) c", "mean", p=4 * 2**level, q=4 * 2**level).astype(np.float16)
        for level in range(len(TOKENS))
    }


def toy_decode(latent: torch.Tensor, level: int) -> torch.Tensor:
    side = SIZE // 4 // 2**level
    grid = rearrange(latent.float(), "n (h w) c -> n c h w", h=side)
    return repeat(grid, "n c h w -> n c (h p) (w q)", p=SIZE // side, q=SIZE // side).clamp(0, 1)


def write_eval_data(root) -> EvalData:
    """Six toy episodes (half of them test) under `root`, with their toy latents."""
    episodes = {f"ep-{i}": episode(i) for i in range(6)}
    split = SplitConfig(val=0.0, test=0.5, seed=0)
    write_dataset(str(root / "frames"), episodes.items(), frame_columns(SIZE), split=split)
    frames = open_dataset(str(root / "frames"))
    splits = {e.id: e.split for e in frames.manifest.episodes}
    latent_columns = {f"latent_{l}": ColumnSpec(dtype="float16", shape=(n, 3)) for l, n in enumerate(TOKENS)}
    latents = ((name, toy_latents(arrays["frames"])) for name, arrays in episodes.items())
    write_dataset(str(root / "latents"), latents, latent_columns, kind="latents", splits=splits)
    return EvalData(frames, open_dataset(str(root / "latents")))


class Perfect:
    """Returns the ground truth: the best any method can do."""

    def __init__(self, data: EvalData):
        self.data = data

    def __call__(self, batch):
        span = TOY_EVAL.context + TOY_EVAL.rollout
        return np.stack([self.data.frames.read(e.episode, e.start + TOY_EVAL.context, e.start + span, ["frames"])["frames"] for e in batch.examples])
