"""The autoencoder as a `millivid.training.Task`: frames in, random decoded level per example,
pyramid loss out; held-out evaluation per level with a reconstruction grid.

    task = AutoencoderTask(cfg.autoencoder, cfg.data.size, ArrayFrames(train, held_out))
    model = millivid.training.fit(task, cfg.autoencoder.train, precision="bf16")
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from millivid.ae.config import AutoencoderConfig
from millivid.ae.evaluate import level_metrics, level_reconstructions
from millivid.ae.figures import reconstruction_grid
from millivid.ae.frames import FrameSource, to_numpy, to_tensor
from millivid.ae.loss import pyramid_loss
from millivid.ae.model import HierarchicalAutoencoder, as_unit_frames, build_autoencoder
from millivid.ae.pyramid import image_pyramid
from millivid.perceptual import Lpips
from millivid.training import Evaluation


class AutoencoderTask:
    def __init__(
        self,
        cfg: AutoencoderConfig,
        size: int,
        frames: FrameSource,
        eval_frames: int = 64,
        grid_frames: int = 4,
        lpips: nn.Module | None = None,
    ):
        """`lpips`: an already built LPIPS network to share between tasks; by default one is built
        from cfg.lpips on first use."""
        self.cfg, self.size, self.frames = cfg, size, frames
        self.eval_frames, self.grid_frames = eval_frames, grid_frames
        self._lpips = lpips

    def lpips(self, device: torch.device) -> nn.Module:
        """Built on first use: a training run with lpips_weight 0 loads no backbone until evaluation."""
        if self._lpips is None:
            self._lpips = Lpips(self.cfg.lpips.net, self.cfg.lpips.backbone, self.cfg.lpips.weights_path)
        return self._lpips.to(device)

    def build_model(self) -> HierarchicalAutoencoder:
        return build_autoencoder(self.cfg.model, self.size)

    def batch(self, step: int, rank: int, world_size: int, device: torch.device) -> torch.Tensor:
        """(b 3 h w) uint8: this rank's share of the step's batch_size frames."""
        total = self.cfg.train.batch_size
        share = total // world_size + (rank < total % world_size)
        if share == 0:
            raise ValueError(f"autoencoder.train.batch_size {total} leaves rank {rank} of {world_size} no examples")
        rng = np.random.default_rng([self.cfg.train.seed, step, rank])
        return to_tensor(self.frames.sample(rng, share), device)

    def loss(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levels = sample_levels(self.cfg, batch.shape[0], generator)
        reconstruction = model(batch, levels.to(batch.device))
        target = image_pyramid(as_unit_frames(batch, self.size), self.cfg.model.levels)
        lpips = self.lpips(batch.device) if self.cfg.loss.lpips_weight > 0 else None
        return pyramid_loss(reconstruction, target, self.cfg.loss, lpips)

    def evaluate(self, model: nn.Module, device: torch.device) -> Evaluation:
        frames = self.frames.held_out(self.eval_frames)
        truth = as_unit_frames(to_tensor(frames, device), self.size)
        precision = "bf16" if torch.is_autocast_enabled(device.type) else "fp32"  # as the caller (fit) chose
        reconstructions = level_reconstructions(model, truth, precision=precision)
        metrics = level_metrics(truth, reconstructions, self.lpips(device))
        shown = slice(0, self.grid_frames)
        picture = reconstruction_grid(frames[shown], to_numpy(reconstructions[:, shown]))
        return Evaluation(metrics, {"reconstructions.png": picture})


def level_probabilities(cfg: AutoencoderConfig) -> torch.Tensor:
    """(levels,) probability that a training example decodes level l: base^l, normalised."""
    weights = torch.tensor([cfg.loss.level_sampling_base**level for level in range(cfg.model.levels)], dtype=torch.float64)
    return weights / weights.sum()


def sample_levels(cfg: AutoencoderConfig, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) int64 levels to decode, drawn from `generator` on its device."""
    probabilities = level_probabilities(cfg).float().to(generator.device)
    return torch.multinomial(probabilities, count, replacement=True, generator=generator)


def variant_config(cfg: AutoencoderConfig, variant: str) -> AutoencoderConfig:
    """The same autoencoder config with model.variant set (for training the downscaled comparison)."""
    return AutoencoderConfig.model_validate({**cfg.model_dump(), "model": {**cfg.model.model_dump(), "variant": variant}})
