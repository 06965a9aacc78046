"""Overfit check: a tiny DiT trained with millivid.training.fit on a few synthetic latent videos
rolls a training video out from its context, for every method.

The synthetic world: a camera on a line of 7 positions; frame content = a position-dependent colour
(along a fixed direction in latent space) + a fixed spatial pattern; left/right move the camera one
position (never past the ends: the videos only pick actions that stay on the line), forward keeps it. So content depends on actions and the model must
read the context (where am I?) and the action (where do I go?) at the right frames. Coarser levels
are the mean-pooled finest latents, which also serves as the re-encoder FramePack needs.

Each training video is rolled out from its first 20 frames for 16 frames. Threshold: latent PSNR
(peak-to-peak 2, latents in [-1, 1]; MSE pooled over the 4 videos) >= 18 dB and >= 4 dB above
copying the last context frame; swapping left and right in the actions must cost >= 3 dB (the
rollout follows the actions). Measured (bf16, 1 thread, ~11-15 s each): millivid 21.7, full_res
24.2, framepack 22.4, framepack kernel 26.2 dB; copy-last 14.1 dB; swapped actions 10-12 dB.
"""

import numpy as np
import pytest
import torch
from einops import rearrange, reduce
from toys import CHANNELS, METHODS, TOKENS

from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.rollout import rollout
from millivid.diffusion.schedule import build_schedule
from millivid.diffusion.task import DiffusionTask, InMemoryClips
from millivid.schema import TrainConfig
from millivid.training import fit

POSITIONS = 7
KNOWN = 20  # context frames: the longest chunk here (millivid) fits
GENERATED = 16
MOVES = {0: 0, 1: -1, 2: 1}  # forward, left, right


def pyramid(finest: np.ndarray) -> list[np.ndarray]:
    """(... 16 c) finest latents -> every level, coarser ones mean-pooled."""
    grid = rearrange(finest, "... (h w) c -> ... h w c", h=4)
    return [reduce(grid, "... (h a) (w b) c -> ... (h w) c", "mean", a=k, b=k).astype(np.float32) for k in (1, 2, 4)]


def world(videos: int = 4, frames: int = 64, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.choice([-1, 1], CHANNELS) * rng.uniform(0.5, 1, CHANNELS)
    colours = rearrange((np.arange(POSITIONS) - 3) / 6, "p -> p 1 1") * direction  # (positions 1 c)
    pattern = rng.uniform(-0.3, 0.3, (1, TOKENS[0], CHANNELS))
    actions = np.zeros((videos, frames), dtype=np.int64)
    positions = np.zeros((videos, frames), dtype=np.int64)
    for video in range(videos):
        position, action = rng.integers(POSITIONS), 0
        for frame in range(frames):
            allowed = [a for a, move in MOVES.items() if 0 <= position + move < POSITIONS]
            if frame == 0 or action not in allowed or rng.random() < 0.4:
                action = int(rng.choice(allowed))
            if frame:  # actions[f] moved the camera from frame f-1 to frame f
                position += MOVES[action]
            actions[video, frame], positions[video, frame] = action, position
    return pyramid((colours + pattern)[positions]), actions


def reencode(finest: torch.Tensor) -> list[torch.Tensor]:
    return [torch.from_numpy(level) for level in pyramid(finest.numpy())]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(4 / np.mean((a - b) ** 2)))


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_tiny_model_reproduces_its_training_videos(name):
    latents, actions = world()
    schedule = build_schedule(METHODS[name], TOKENS, name)
    task = DiffusionTask(schedule, DiTConfig(width=64, depth=2, heads=2, cfg_dropout=0.0), CHANNELS, InMemoryClips(latents, actions), batch_size=16)
    model = fit(task, TrainConfig(steps=400, batch_size=16, lr=3e-3, warmup_steps=20, log_every=100, eval_every=400, checkpoint_every=400))

    total = KNOWN + GENERATED
    context = [torch.from_numpy(level[:, :KNOWN]) for level in latents]

    def generate(video_actions: np.ndarray) -> np.ndarray:
        result = rollout(model, schedule, context, torch.from_numpy(video_actions), total, SamplerConfig(steps=10), reencode=reencode)
        return result.latents[0][:, KNOWN:].numpy()

    truth = latents[0][:, KNOWN:total]
    copy_last = np.repeat(latents[0][:, KNOWN - 1 : KNOWN], GENERATED, axis=1)
    swapped = np.where(actions == 0, 0, 3 - actions)  # left <-> right
    quality, baseline, misled = psnr(generate(actions), truth), psnr(copy_last, truth), psnr(generate(swapped), truth)
    assert quality >= 18 and quality >= baseline + 4, (quality, baseline)
    assert misled <= quality - 3, (misled, quality)
