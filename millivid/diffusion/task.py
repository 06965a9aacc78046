"""The diffusion transformer's training task for millivid.training.fit: one schedule, one model.

A batch is `batch_size` clips of `schedule.span` frames (every level's latents and the actions),
each with one step of the schedule. Levels are stratified over the batch (example k denoises level
(offset + k) mod L', L' = the levels the schedule denoises, offset random), then a step of that
level is drawn with `training_step_weights`: each denoised level is equally likely, as the paper
asks, and every level shows up in every batch of at least L' examples. The loss draws a time t per
example, noises the DENOISED tokens, drops the actions with probability cfg_dropout, and takes the
MSE on v over DENOISED tokens only, averaged per example first so each level weighs the same
whatever its token count. Steps of one schedule may differ in token count: shorter ones are padded
and the padding is masked out of attention.

Clips come from any `ClipSource`; `InMemoryClips` cuts them from whole latent videos in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from einops import rearrange, reduce

from millivid import images
from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.dit import DiT, build_dit
from millivid.diffusion.noise import add_noise, alpha_sigma, v_target
from millivid.diffusion.rollout import Decode, Reencode, rollout
from millivid.diffusion.schedule import Schedule, training_step_weights
from millivid.diffusion.tokens import (
    NULL_ACTION,
    NUM_ACTIONS,
    StepTokens,
    concat,
    gather,
    step_layout,
)
from millivid.training import Evaluation
from millivid.video import as_video


class ClipSource(Protocol):
    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        """`batch` clips of `length` consecutive frames, drawn with `rng` only:
        latent_{l}: (batch length n_l c) for every level l, actions: (batch length) ints."""


class InMemoryClips:
    """Clips cut at random places from whole latent videos: latents[l] (videos T n_l c), actions (videos T)."""

    def __init__(self, latents: Sequence[np.ndarray], actions: np.ndarray):
        self.latents, self.actions = [np.asarray(latent) for latent in latents], np.asarray(actions)
        shape = self.actions.shape
        if self.actions.ndim != 2 or any(latent.shape[:2] != shape for latent in self.latents):
            raise ValueError(f"latents (videos T n_l c) and actions (videos T) must agree on (videos, T), got actions {shape} and latents {[latent.shape for latent in self.latents]}")

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        videos, frames = self.actions.shape
        if length > frames:
            raise ValueError(f"clips of {length} frames requested from videos of {frames} frames")
        video = rng.integers(videos, size=batch)[:, None]
        index = rng.integers(frames - length + 1, size=batch)[:, None] + np.arange(length)
        clips = {f"latent_{level}": latent[video, index] for level, latent in enumerate(self.latents)}
        return clips | {"actions": self.actions[video, index]}


@dataclass
class TrainBatch:
    tokens: StepTokens  # clean latents at every token
    levels: torch.Tensor  # (b,) the level each example's step denoises


@dataclass(frozen=True)
class Preview:
    """A small rollout picture in every evaluation: ground truth (top) vs generated (bottom)."""

    decode: Decode
    sampler: SamplerConfig = SamplerConfig(steps=10, batch_size=1)
    frames: int = 8
    reencode: Reencode | None = None


@dataclass
class DiffusionTask:
    schedule: Schedule
    model_config: DiTConfig
    channels: int
    source: ClipSource
    batch_size: int
    seed: int = 0
    eval_source: ClipSource | None = None  # held-out clips; defaults to `source`
    eval_examples: int = 16
    preview: Preview | None = None
    activation_checkpointing: bool = False  # speed/memory only: see ComputeConfig
    eval_batches: dict[int, TrainBatch] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        schedule = self.schedule
        self.layouts = [step_layout(step, schedule.tokens_per_level, schedule.context_source) for step in schedule.steps]
        self.weights = training_step_weights(schedule)
        self.step_levels = np.array([schedule.denoised_level(i) for i in range(len(schedule.steps))])
        self.levels = np.unique(self.step_levels)

    @property
    def held_out_source(self) -> ClipSource:
        return self.eval_source or self.source

    def build_model(self) -> DiT:
        model = build_dit(self.model_config, self.channels, self.schedule.tokens_per_level, self.schedule.context_source)
        model.checkpoint_blocks = self.activation_checkpointing
        return model

    def batch(self, step: int, rank: int, world_size: int, device: torch.device) -> TrainBatch:
        rng = np.random.default_rng([self.seed, step, rank, world_size])
        size = self.batch_size // world_size + int(rank < self.batch_size % world_size)
        if size < 1:
            raise ValueError(f"batch_size {self.batch_size} leaves rank {rank} of {world_size} without examples")
        offset = rng.integers(len(self.levels))
        levels = self.levels[(offset + np.arange(size)) % len(self.levels)]
        return self.make_batch(self.source, rng, levels, device)

    def make_batch(self, source: ClipSource, rng: np.random.Generator, levels: np.ndarray, device: torch.device) -> TrainBatch:
        """Clips from `source` for examples that denoise `levels` (b,), each with a step of its level."""
        span = self.schedule.span
        clips = check_clips(source.sample(rng, len(levels), span), self.schedule.tokens_per_level, self.channels, (len(levels), span))
        steps = np.array([rng.choice(np.flatnonzero(self.step_levels == level), p=self.level_weights(level)) for level in levels])
        # gather casts the step's tokens to float32: casting whole clips first cost 4x more (paper preset)
        latents = [torch.from_numpy(clips[f"latent_{level}"]) for level in range(self.schedule.levels)]
        actions = torch.from_numpy(clips["actions"]).long()
        tokens = concat([gather([latent[k : k + 1] for latent in latents], actions[k : k + 1], np.arange(span), self.layouts[step])
                         for k, step in enumerate(steps)])
        return TrainBatch(tokens.to(device), torch.as_tensor(levels, device=device))

    def level_weights(self, level: int) -> np.ndarray:
        weights = self.weights[self.step_levels == level]
        return weights / weights.sum()

    def loss(self, model: torch.nn.Module, batch: TrainBatch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        examples, device = len(batch.levels), batch.levels.device
        t = torch.rand(examples, generator=generator, device=device)
        eps = torch.randn(batch.tokens.latent.shape, generator=generator, device=device)
        dropped = torch.rand(examples, generator=generator, device=device) < self.model_config.cfg_dropout
        per_example = denoising_error(model, batch.tokens, t, eps, dropped)
        metrics = {}
        if examples >= len(self.levels):  # every level is in every batch, so the keys never change
            errors = per_example.detach()
            masks = {level: (batch.levels == level).float() for level in self.levels}  # masked means: no host sync
            metrics = {f"train/loss_level{level}": (errors * mask).sum() / mask.sum() for level, mask in masks.items()}
        return per_example.mean(), metrics

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device) -> Evaluation:
        """Held-out v-MSE per level on fixed clips, noise and times (stratified over (0, 1)); a rollout picture with `preview`."""
        metrics = {}
        for level in self.levels:
            batch = self.held_out(int(level), device)
            examples = len(batch.levels)
            t = (torch.arange(examples, device=device) + 0.5) / examples
            eps = torch.randn(batch.tokens.latent.shape, generator=torch.Generator().manual_seed(self.seed)).to(device)
            kept = torch.zeros(examples, dtype=torch.bool, device=device)
            metrics[f"loss_level{level}"] = float(denoising_error(model, batch.tokens, t, eps, kept).mean())
        metrics["loss"] = float(np.mean(list(metrics.values())))
        pictures = {"rollout": self.rollout_picture(model)} if self.preview is not None else {}
        return Evaluation(metrics, pictures)

    def held_out(self, level: int, device: torch.device) -> TrainBatch:
        if level not in self.eval_batches:
            rng = np.random.default_rng([self.seed, level, 7919])
            self.eval_batches[level] = self.make_batch(self.held_out_source, rng, np.full(self.eval_examples, level), device)
        return self.eval_batches[level]

    def rollout_picture(self, model: torch.nn.Module) -> bytes:
        """PNG: the last two context frames then `preview.frames` generated ones; truth above, rollout below."""
        preview, known = self.preview, self.schedule.span
        length = known + preview.frames
        clip = self.held_out_source.sample(np.random.default_rng([self.seed, 104729]), 1, length)
        clip = check_clips(clip, self.schedule.tokens_per_level, self.channels, (1, length))
        device = next(model.parameters()).device
        latents = [torch.from_numpy(clip[f"latent_{level}"]).float().to(device) for level in range(self.schedule.levels)]
        context = [latent[:, :known] for latent in latents]
        result = rollout(model, self.schedule, context, torch.from_numpy(clip["actions"]).long(), length, preview.sampler, self.seed, reencode=preview.reencode)
        shown = slice(known - 2, length)
        frames = np.stack([as_video(preview.decode(latents[0][0, shown], 0)), as_video(preview.decode(result.latents[0][0, shown], 0))])
        return images.png_bytes(images.grid(frames), scale=max(1, 64 // frames.shape[2]))


def check_clips(clips: dict[str, np.ndarray], tokens_per_level: Sequence[int], channels: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """`clips` if its latents are (batch length n_l c) and its actions valid (batch length) ints; else a clear error naming the key."""
    for level, tokens in enumerate(tokens_per_level):
        key, expected = f"latent_{level}", (*shape, tokens, channels)
        if key not in clips:
            raise ValueError(f"clip source: no {key!r} among the clip's keys {sorted(clips)}")
        if np.shape(clips[key]) != expected:
            raise ValueError(f"clip source: {key} must be (batch length n_l c) = {expected}, got {np.shape(clips[key])}")
    actions = np.asarray(clips.get("actions"))
    if actions.shape != shape or actions.dtype.kind not in "iu":
        raise ValueError(f"clip source: actions must be integers (batch length) = {shape}, got {actions.dtype} {actions.shape}")
    if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
        raise ValueError(f"clip source: unknown actions {np.unique(actions).tolist()}; expected 0..{NUM_ACTIONS - 1}")
    return clips


def denoising_error(model: torch.nn.Module, tokens: StepTokens, t: torch.Tensor, eps: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """(b,) MSE of the v prediction over each example's DENOISED tokens (fp32): `token_error` averaged per example.

    t: (b,) times; eps: (b n c) noise; dropped: (b,) True where the actions are replaced by the null action.
    """
    error = token_error(model, tokens, t, eps, dropped) * tokens.denoised
    return error.sum(dim=1) / tokens.denoised.sum(dim=1)


def token_error(model: torch.nn.Module, tokens: StepTokens, t: torch.Tensor, eps: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """(b n) squared error of the v prediction per token, mean over channels (fp32), with the DENOISED
    tokens noised at times t and the others clean; callers reduce it over the tokens they ask about.

    t: (b,) times; eps: (b n c) noise; dropped: (b,) True where the actions are replaced by the null action.
    """
    alpha, sigma = (rearrange(value, "b -> b 1 1") for value in alpha_sigma(t))
    clean = tokens.latent
    where = rearrange(tokens.denoised, "b n -> b n 1")
    noisy = torch.where(where, add_noise(clean, eps, alpha, sigma), clean)
    actions = torch.where(rearrange(dropped, "b -> b 1"), NULL_ACTION, tokens.action)
    v = model(tokens.replace(latent=noisy, action=actions), t).float()
    return reduce((v - v_target(clean, eps, alpha, sigma)) ** 2, "b n c -> b n", "mean")
