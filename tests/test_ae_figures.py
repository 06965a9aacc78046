"""PNG grids and strips (millivid.images) and the autoencoder's reconstruction pictures."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from millivid.ae.config import AutoencoderModelConfig
from millivid.ae.figures import MIN_PICTURE_SIDE, comparison_figure, reconstruction_grid
from millivid.ae.frames import synthetic_frames
from millivid.ae.model import build_autoencoder
from millivid.images import grid, png_bytes, strip, to_uint8


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_grid_places_frames_row_by_row_with_gutters():
    frames = np.zeros((2, 3, 4, 5, 3), dtype=np.uint8)
    frames[1, 2] = 7
    image = grid(frames, gap=1)
    assert image.shape == (2 * 4 + 1, 3 * 5 + 2, 3)
    assert (image[5:9, 12:17] == 7).all() and (image[4] == 255).all()
    assert grid(frames, gap=0).shape == (8, 15, 3)


def test_strip_is_one_row():
    assert strip(np.zeros((4, 6, 6, 3), dtype=np.uint8), gap=2).shape == (6, 4 * 6 + 3 * 2, 3)


def test_png_round_trip_and_scale():
    image = synthetic_frames(1, 8)[0]
    np.testing.assert_array_equal(decode_png(png_bytes(image)), image)
    big = decode_png(png_bytes(image, scale=3))
    assert big.shape == (24, 24, 3)
    np.testing.assert_array_equal(big[::3, ::3], image)


def test_pictures_reject_float_or_misshapen_arrays():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="rows cols h w 3"):
        grid(np.zeros((4, 4, 4, 3), dtype=np.uint8))


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])


def test_reconstruction_grid_has_truth_then_one_column_per_level():
    truth = synthetic_frames(2, 16)
    reconstructions = np.stack([synthetic_frames(2, 16, seed=level) for level in range(3)])
    image = decode_png(reconstruction_grid(truth, reconstructions))
    scale = MIN_PICTURE_SIDE // 16
    assert image.shape == ((2 * 17 - 1) * scale, (4 * 17 - 1) * scale, 3)
    np.testing.assert_array_equal(image[: 16 * scale : scale, : 16 * scale : scale], truth[0])
    left = 3 * 17 * scale  # the last column: level 2
    np.testing.assert_array_equal(image[17 * scale :: scale, left :: scale], reconstructions[2, 1])


def test_comparison_figure_is_a_png():
    torch.manual_seed(0)
    cfg = AutoencoderModelConfig(patch=2, levels=3, latent_channels=4, width=32, encoder_depth=1, decoder_depth=1, heads=2)
    models = {variant: build_autoencoder(cfg.model_copy(update={"variant": variant}), 16) for variant in ("hierarchical", "downscaled")}
    image = decode_png(comparison_figure(models, synthetic_frames(2, 16)))
    assert image.shape[0] > 100 and image.shape[1] > 100
