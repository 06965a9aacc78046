"""Fréchet distance, the random-feature stand-in, and real FVD through a test-made TorchScript net."""

import warnings

import numpy as np
import pytest
import torch
from einops import rearrange, reduce, repeat
from torch import nn

from millivid.eval.config import EvalConfig
from millivid.eval.fvd import (
    FVD,
    STANDIN,
    I3DUnavailable,
    RandomVideoFeatures,
    chunk_frames,
    frechet_distance,
    load_i3d,
    quality_networks,
    takes_i3d_options,
    video_features,
)


def test_frechet_of_identical_sets_is_zero_and_grows_with_shift():
    features = np.random.default_rng(0).normal(size=(40, 8))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(features + shift, features) for shift in (0.5, 1.0, 2.0)]
    # a pure mean shift of s in each of d=8 dimensions adds d s^2
    np.testing.assert_allclose(distances, [8 * 0.25, 8 * 1.0, 8 * 4.0], rtol=1e-6)


def test_frechet_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 3)) * [1.0, 2.0, 3.0]
    b = rng.normal(size=(20000, 3)) * [2.0, 2.0, 1.0] + [1.0, 0.0, 0.0]
    # sum of (mu diff)^2 + (sigma_a - sigma_b)^2 per dimension: 1 + 1 + 0 + 4
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)


def test_frechet_with_fewer_samples_than_dimensions_stays_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 64)), rng.normal(size=(3, 64))
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(a[:1], a[:1]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, b[:, :10])


def test_standin_is_deterministic_and_separates_blur_from_detail():
    generator = torch.Generator().manual_seed(0)
    sharp = torch.rand(6, 3, 8, 16, 16, generator=generator)
    blurred = repeat(reduce(sharp, "b c t h w -> b c t", "mean"), "b c t -> b c t 16 16")
    other = torch.rand(6, 3, 8, 16, 16, generator=generator)
    first, second = RandomVideoFeatures(), RandomVideoFeatures()
    np.testing.assert_array_equal(video_features(first, sharp), video_features(second, sharp))
    reference = video_features(first, other)
    assert video_features(first, sharp).shape == (6, 128)
    assert frechet_distance(video_features(first, sharp), reference) < frechet_distance(video_features(first, blurred), reference)


def test_chunk_frames_drops_the_tail():
    frames = repeat(torch.arange(35, dtype=torch.float32), "t -> t 3 2 2")
    chunks = chunk_frames(frames, 8)
    assert chunks.shape == (4, 3, 8, 2, 2)
    assert chunks[1, 0, :, 0, 0].tolist() == list(range(8, 16))


class TinyI3D(nn.Module):
    """A small stand-in for the I3D export: (b 3 t h w) -> (b 4) features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.conv(videos).mean(dim=(2, 3, 4))


class TinyI3DWithOptions(nn.Module):
    """Mimics the common TorchScript I3D signature; records the resize request in the output."""

    def forward(self, videos: torch.Tensor, rescale: bool = True, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        flag = 1.0 if (resize and return_features and not rescale) else 0.0
        return torch.cat([videos.mean(dim=(1, 2, 3, 4)).unsqueeze(1), torch.full((videos.shape[0], 1), flag)], dim=1)


@pytest.fixture
def i3d_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "i3d.pt"
    torch.jit.trace(TinyI3D(), torch.rand(1, 3, 4, 8, 8)).save(str(path))
    return str(path)


def test_real_fvd_path_loads_the_torchscript_net_and_resizes_input(i3d_file):
    networks = quality_networks(EvalConfig(i3d_uri=i3d_file, i3d_size=12))
    assert networks.fvd_status["available"] and set(networks.networks) == {FVD, STANDIN}
    chunks = torch.rand(5, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    features = networks.features(FVD, chunks)
    assert features.shape == (5, 4)
    frames = rearrange(chunks * 2 - 1, "b c t h w -> (b t) c h w")
    resized = torch.nn.functional.interpolate(frames, size=(12, 12), mode="bilinear")
    direct = load_i3d(i3d_file)(rearrange(resized, "(b t) c h w -> b c t h w", b=5))
    np.testing.assert_allclose(features, direct.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_i3d_with_options_is_asked_for_features_and_does_its_own_resizing(tmp_path):
    path = tmp_path / "i3d-options.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, and still what such exports are
        torch.jit.script(TinyI3DWithOptions()).save(str(path))
    module = load_i3d(str(path))
    assert takes_i3d_options(module) and not takes_i3d_options(RandomVideoFeatures())
    features = video_features(module, torch.full((2, 3, 4, 16, 16), 0.75), size=224)
    np.testing.assert_allclose(features, [[0.5, 1.0], [0.5, 1.0]])  # scaled to [-1, 1], flags passed, no resize by us


def test_fvd_unavailable_says_why(tmp_path):
    absent = quality_networks(EvalConfig())
    assert not absent.fvd_status["available"] and "i3d_uri is not set" in absent.fvd_status["reason"]
    assert set(absent.networks) == {STANDIN}
    missing = quality_networks(EvalConfig(i3d_uri=str(tmp_path / "none.pt")))
    assert "no file at" in missing.fvd_status["reason"]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torchscript archive")
    broken = quality_networks(EvalConfig(i3d_uri=str(corrupt)))
    assert not broken.fvd_status["available"] and "not a loadable TorchScript" in broken.fvd_status["reason"]
    with pytest.raises(I3DUnavailable, match="not a loadable"):
        load_i3d(str(corrupt))
