"""Reference lines, as rollout functions evaluated exactly like methods (drawn dashed).

    context_mean          every rollout frame is the mean of the context frames. Pixel metrics
                          reward its blur; a method that does not beat it has not shown memory.
    copy_last             every rollout frame is the last context frame.
    nearest_pose          every rollout frame is the context frame whose camera view is closest
                          (needs poses): what perfect memory of the context, without any
                          generation, would show. Frames of unknown pose get the last context frame.
    random_frames         the frames at the same window frame index of a different, randomly
                          chosen episode of the split; decoded from its finest latents when a
                          decoder is given (as in the paper), its raw frames otherwise.
    ground_truth_latents  the example's own finest latents decoded: the autoencoder's ceiling.

    refs = standard_references(data, cfg, decode=lambda z, level: autoencoder.decode(z, level))
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from einops import rearrange, repeat

from millivid.data.columns import DataError
from millivid.diffusion.rollout import Decode, decode_frames
from millivid.eval.config import REFERENCE_NAMES, EvalConfig
from millivid.eval.protocol import (
    EvalData,
    Example,
    RolloutBatch,
    RolloutFn,
    nearest_pose_frames,
    read_latents,
    window_pose,
)

CONTEXT_MEAN, COPY_LAST, NEAREST_POSE, RANDOM_FRAMES, GROUND_TRUTH_LATENTS = REFERENCE_NAMES
DONOR_STREAM = 0xD0

NOTES = {
    CONTEXT_MEAN: "mean of the context frames; beating it is the bar for memory",
    COPY_LAST: "last context frame repeated",
    NEAREST_POSE: "context frame with the closest camera view",
    RANDOM_FRAMES: "same frame index of a different random episode",
    GROUND_TRUTH_LATENTS: "true finest latents decoded: the autoencoder's ceiling",
}


def context_mean(batch: RolloutBatch) -> np.ndarray:
    mean = batch.context_frames.astype(np.float32).mean(axis=1) / 255
    return repeat(mean, "b h w c -> b t h w c", t=batch.rollout)


def copy_last(batch: RolloutBatch) -> np.ndarray:
    return repeat(batch.context_frames[:, -1], "b h w c -> b t h w c", t=batch.rollout)


class NearestPose:
    def __init__(self, data: EvalData, cfg: EvalConfig):
        self.data, self.cfg = data, cfg

    def __call__(self, batch: RolloutBatch) -> np.ndarray:
        span = self.cfg.context + self.cfg.rollout
        chosen = np.stack([nearest_pose_frames(window_pose(self.data.frames, e.episode, e.start, span), self.cfg) for e in batch.examples])
        chosen = np.where(chosen >= 0, chosen, self.cfg.context - 1)  # (b R)
        return np.take_along_axis(batch.context_frames, chosen[:, :, None, None, None], axis=1)


class RandomFrames:
    """Rollout frames of a donor episode chosen from the example's seed; at the example's start
    where the donor is long enough, else at the donor's last full window."""

    def __init__(self, data: EvalData, cfg: EvalConfig, decode: Decode | None = None):
        if decode is not None and data.latents is None:
            raise ValueError("random_frames with a decoder needs EvalData.latents (latent_0 of every episode)")
        self.data, self.cfg, self.decode = data, cfg, decode
        self.span = cfg.context + cfg.rollout
        self.episodes = [e for e in data.frames.episodes(cfg.split) if data.frames.length(e) >= self.span]

    def donor(self, example: Example) -> tuple[str, int]:
        others = [e for e in self.episodes if e != example.episode]
        if not others:
            raise DataError(f"{self.data.frames.uri}: random_frames needs a second {self.cfg.split} episode of {self.span} frames")
        episode = others[np.random.default_rng([example.seed, DONOR_STREAM]).integers(len(others))]
        return episode, min(example.start, self.data.frames.length(episode) - self.span)

    def donor_latents(self, example: Example) -> tuple[np.ndarray, ...]:
        """Per level (R n_l c): the donor's true latents at the rollout's window frames (EvalData.latents)."""
        episode, start = self.donor(example)
        window = read_latents(self.data, replace(example, episode=episode, start=start), self.span)
        return tuple(level[self.cfg.context :] for level in window)

    def __call__(self, batch: RolloutBatch) -> np.ndarray | torch.Tensor:
        windows = [self.donor(example) for example in batch.examples]
        first = self.cfg.context
        if self.decode is None:
            return np.stack([self.data.frames.read(e, s + first, s + self.span, ["frames"])["frames"] for e, s in windows])
        latents = [self.data.latents.read(e, s + first, s + self.span, ["latent_0"])["latent_0"] for e, s in windows]
        return decoded(self.decode, np.stack(latents))


class GroundTruthLatents:
    def __init__(self, data: EvalData, cfg: EvalConfig, decode: Decode):
        if data.latents is None:
            raise ValueError("ground_truth_latents needs EvalData.latents (latent_0 of every episode)")
        self.data, self.cfg, self.decode = data, cfg, decode

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        first, span = self.cfg.context, self.cfg.context + self.cfg.rollout
        latents = [self.data.latents.read(e.episode, e.start + first, e.start + span, ["latent_0"])["latent_0"] for e in batch.examples]
        return decoded(self.decode, np.stack(latents))


def decoded(decode: Decode, finest: np.ndarray) -> torch.Tensor:
    """finest: (b t n0 c) latents -> (b t h w 3) frames in [0, 1]."""
    frames = decode_frames(decode, torch.from_numpy(finest.astype(np.float32)))
    return rearrange(frames, "b t c h w -> b t h w c")


def standard_references(data: EvalData, cfg: EvalConfig, decode: Decode | None = None) -> dict[str, RolloutFn]:
    """Every reference line the data allows: the latent-decoded ones need a decoder and latents."""
    references: dict[str, RolloutFn] = {CONTEXT_MEAN: context_mean, COPY_LAST: copy_last}
    if data.frames.manifest.pose_known:
        references[NEAREST_POSE] = NearestPose(data, cfg)
    references[RANDOM_FRAMES] = RandomFrames(data, cfg, decode if data.latents is not None else None)
    if decode is not None and data.latents is not None:
        references[GROUND_TRUTH_LATENTS] = GroundTruthLatents(data, cfg, decode)
    return references
