"""The cosine log-SNR schedule, v-prediction algebra and the deterministic DDIM update."""

import pytest
import torch

from millivid.diffusion.noise import (
    LOGSNR_MAX,
    LOGSNR_MIN,
    add_noise,
    alpha_sigma,
    ddim_step,
    logsnr,
    predict_clean,
    predict_noise,
    time_grid,
    v_target,
)


def test_logsnr_is_cosine_clipped_and_decreasing():
    t = torch.linspace(0, 1, 101)
    snr = logsnr(t)
    assert snr[0] == pytest.approx(LOGSNR_MAX, abs=1e-4) and snr[-1] == pytest.approx(LOGSNR_MIN, abs=1e-4)
    assert (snr[1:] < snr[:-1]).all()
    assert logsnr(torch.tensor([0.5])).item() == pytest.approx(0.0, abs=0.05)  # -2 log tan(pi/4) = 0, shifted by the clip


def test_alpha_sigma_are_variance_preserving():
    alpha, sigma = alpha_sigma(torch.linspace(0, 1, 50))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(50), atol=1e-6)


def test_v_prediction_recovers_clean_and_noise():
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    alpha, sigma = alpha_sigma(torch.tensor([[0.0], [0.3], [0.7], [1.0]]))
    z, v = add_noise(x, eps, alpha, sigma), v_target(x, eps, alpha, sigma)
    assert torch.allclose(predict_clean(z, v, alpha, sigma), x, atol=1e-5)
    assert torch.allclose(predict_noise(z, v, alpha, sigma), eps, atol=1e-5)


def test_ddim_with_the_true_velocity_lands_on_the_clean_latent():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, generator=generator) * 1.6 - 0.8
    z = torch.randn(3, 5, generator=generator)  # at t = 1 the latent is (almost) pure noise
    for t, s in zip(time_grid(6)[:-1], time_grid(6)[1:], strict=True):
        alpha, sigma = alpha_sigma(t)
        eps = (z - alpha * x) / sigma
        z, predicted = ddim_step(z, v_target(x, eps, alpha, sigma), t, s)
    assert torch.allclose(predicted, x, atol=1e-5)
    assert torch.allclose(z, x, atol=5e-3)  # t = 0 keeps sigma = sqrt(sigmoid(-15)) ~ 5e-4 of noise


def test_ddim_clips_the_predicted_clean_latent():
    z = torch.full((2, 3), 50.0)
    _, predicted = ddim_step(z, torch.zeros_like(z), torch.tensor(0.5), torch.tensor(0.25))
    assert predicted.max() == 1.0
