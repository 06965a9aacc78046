"""Cosine log-SNR noise schedule with v-prediction, and the deterministic DDIM update.

Time t runs from 0 (clean) to 1 (pure noise). logsnr(t) = -2 log tan(pi t / 2), clipped to
[LOGSNR_MIN, LOGSNR_MAX] by squeezing t into the matching interval (so t=0 and t=1 stay finite).
A noisy latent is z = alpha x + sigma eps with alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr);
the model predicts v = alpha eps - sigma x, from which x = alpha z - sigma v and eps = sigma z + alpha v.
"""

from __future__ import annotations

import math

import torch

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0
T_MIN = math.atan(math.exp(-0.5 * LOGSNR_MAX))
T_MAX = math.atan(math.exp(-0.5 * LOGSNR_MIN))


def logsnr(t: torch.Tensor) -> torch.Tensor:
    """Cosine schedule: t (any shape) in [0, 1] -> log signal-to-noise ratio, clipped."""
    return -2 * torch.log(torch.tan(T_MIN + t.double() * (T_MAX - T_MIN))).to(t.dtype)


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    snr = logsnr(t)
    return torch.sigmoid(snr).sqrt(), torch.sigmoid(-snr).sqrt()


def add_noise(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return alpha * x + sigma * eps


def v_target(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return alpha * eps - sigma * x


def predict_clean(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return alpha * z - sigma * v


def predict_noise(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma * z + alpha * v


def time_grid(steps: int) -> torch.Tensor:
    """(steps + 1,) times from 1 (noise) down to 0 (clean), evenly spaced."""
    return torch.linspace(1.0, 0.0, steps + 1)


def ddim_step(
    z: torch.Tensor, v: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: float | None = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (eta = 0) move of z from time t to the earlier time s; returns (z_s, predicted x).

    `clip` bounds the predicted clean latent (the latents are tanh-squashed into [-1, 1]), which keeps
    early, poorly conditioned predictions from throwing the trajectory off.
    """
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    x = predict_clean(z, v, alpha_t, sigma_t)
    if clip is not None:
        x = x.clamp(-clip, clip)
    eps = (z - alpha_t * x) / sigma_t
    return alpha_s * x + sigma_s * eps, x
