"""PSNR, SSIM and the LPIPS wrapper: per-image values against known and hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from millivid.metrics import SSIM_K1, SSIM_K2, lpips_distance, psnr, ssim


def test_psnr_identical_is_infinite_and_known_mse_gives_known_db():
    images = torch.rand(3, 3, 16, 16)
    assert torch.isinf(psnr(images, images)).all()
    zeros = torch.zeros(2, 3, 8, 8)
    offset = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    torch.testing.assert_close(psnr(offset, zeros), torch.tensor([20.0, 40.0]))


def test_psnr_is_per_image():
    truth = torch.zeros(2, 3, 8, 8)
    images = truth.clone()
    images[1, 0, 0, 0] = 1.0  # one wrong pixel out of 192
    values = psnr(images, truth)
    assert values.shape == (2,)
    assert math.isinf(values[0]) and values[1] == pytest.approx(10 * math.log10(192), rel=1e-5)


def test_ssim_identical_is_one():
    images = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(ssim(images, images), torch.ones(4))


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.7
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the structure term is 1
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-4)


def test_ssim_of_negated_noise_around_one_half():
    # y = 1 - x: equal means and variances, covariance -var -> structure term (c2 - 2 var)/(c2 + 2 var)
    x = torch.full((1, 1, 32, 32), 0.5)
    x[..., ::2, ::2] += 0.25
    x[..., 1::2, 1::2] -= 0.25
    y = 1 - x
    value = float(ssim(x, y))
    assert value < 0  # anti-correlated structure
    assert ssim(x, x + 0.01).item() > 0.99 > ssim(x, y).item()


def test_ssim_matches_an_independent_gaussian_filter_reference():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    x = rng.random((24, 20))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)

    def blur(image):  # skimage's recipe: sigma 1.5, truncated at radius 5, border cropped
        return ndimage.gaussian_filter(image, 1.5, truncate=3.5)[5:-5, 5:-5]

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    expected = (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()
    ours = ssim(torch.tensor(x)[None, None].float(), torch.tensor(y)[None, None].float())
    assert float(ours) == pytest.approx(expected, abs=1e-4)


def test_metrics_reject_mismatched_or_too_small_inputs():
    with pytest.raises(ValueError, match="equal shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 4))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_metrics_are_float32_under_autocast():
    images = torch.rand(2, 3, 16, 16, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert psnr(images, images.flip(0)).dtype == torch.float32
        assert ssim(images, images.flip(0)).dtype == torch.float32


def test_lpips_distance_upsamples_small_frames(lpips):
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(lpips_distance(lpips, images, images), torch.zeros(2), atol=1e-6)
    distance = lpips_distance(lpips, images, images.flip(0))
    assert distance.shape == (2,) and (distance > 0).all()
