"""The hierarchical autoencoder's geometry, pyramid, encode/decode contract and checkpoints."""

import io

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from toys import TINY_AE

from millivid.ae.checkpoint import autoencoder_state, load_autoencoder, save_autoencoder
from millivid.ae.config import AutoencoderModelConfig
from millivid.ae.model import build_autoencoder
from millivid.ae.pyramid import image_pyramid, patchify, pool_latent, token_centres, unpatchify
from millivid.config import ConfigError, load_config
from millivid.geometry import LevelGeometry

SIZE = 16


def tiny(variant="hierarchical", **changes):
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderModelConfig(**{**TINY_AE, "variant": variant, **changes}), SIZE).eval()
    torch.nn.init.normal_(model.patch_out.weight, std=0.1)  # as if trained: the fresh zero layer hides every input
    return model


def frames(batch=2, size=SIZE, seed=0):
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size,patch,levels", [(16, 2, 3), (32, 4, 3), (64, 4, 4), (16, 4, 1), (32, 1, 5)])
def test_latent_tokens_per_level_follow_the_geometry(size, patch, levels):
    model = build_autoencoder(AutoencoderModelConfig(**{**TINY_AE, "patch": patch, "levels": levels}), size)
    latents = model.encode(frames(size=size))
    expected = LevelGeometry(size, patch, levels).tokens_per_level
    assert tuple(latent.shape[1] for latent in latents) == expected
    assert all(latent.shape == (2, tokens, 4) for latent, tokens in zip(latents, expected, strict=True))


def test_paper_token_counts_at_64_pixels():
    model = build_autoencoder(AutoencoderModelConfig(**{**TINY_AE, "patch": 4, "levels": 4}), 64)
    assert model.tokens_per_level == (256, 64, 16, 4)


@pytest.mark.parametrize("size,patch,levels", [(16, 4, 4), (16, 3, 1), (24, 2, 2)])
def test_invalid_geometry_is_rejected(size, patch, levels):
    with pytest.raises(ValueError, match="patch|power of two"):
        build_autoencoder(AutoencoderModelConfig(**{**TINY_AE, "patch": patch, "levels": levels}), size)


def test_width_that_heads_do_not_divide_is_a_config_error():
    with pytest.raises(ConfigError, match="autoencoder.model"):
        load_config("smoke", ["autoencoder.model.width=36", "autoencoder.model.heads=8"])


def test_pyramid_is_repeated_two_by_two_mean_pooling():
    image = torch.rand(2, 3, 16, 16)
    pyramid = image_pyramid(image, 3)
    assert [level.shape[-1] for level in pyramid] == [16, 8, 4]
    torch.testing.assert_close(pyramid[2], F.avg_pool2d(F.avg_pool2d(image, 2), 2))


def test_patchify_is_row_major_and_inverts():
    image = torch.rand(2, 3, 8, 8)
    tokens = patchify(image, 4)
    assert tokens.shape == (2, 4, 48)
    torch.testing.assert_close(rearrange(tokens[:, 1], "b (p q c) -> b c p q", p=4, q=4), image[:, :, :4, 4:])
    torch.testing.assert_close(unpatchify(tokens, 4), image)


def test_coarse_token_sits_at_the_centre_of_the_fine_tokens_it_covers():
    geometry = LevelGeometry(16, 2, 3)
    centres = token_centres(geometry)
    fine = rearrange(centres[:64], "(gh gw) two -> gh gw two", gh=8)
    coarse = rearrange(centres[64:80], "(gh gw) two -> gh gw two", gh=4)
    torch.testing.assert_close(coarse[1, 2], fine[2:4, 4:6].mean(dim=(0, 1)))


def test_encode_decode_round_trip_shapes_and_range():
    model = tiny()
    with torch.no_grad():
        latents = model.encode(frames())
        assert all(latent.dtype == torch.float32 and latent.abs().max() <= 1 for latent in latents)
        for level, latent in enumerate(latents):
            image = model.decode(latent, level)
            assert image.shape == (2, 3, SIZE, SIZE) and 0 <= image.min() and image.max() <= 1
            pyramid = model.decode_pyramid(latent, level)
            assert [p.shape[-1] for p in pyramid] == [16, 8, 4]


def test_stored_float16_latents_decode_without_autocast():
    model = tiny()
    with torch.no_grad():
        latents = model.encode(frames())
        torch.testing.assert_close(model.decode(latents[1].half(), 1), model.decode(latents[1], 1), atol=2e-3, rtol=0)


def test_float_frames_in_unit_range_encode_like_uint8():
    model = tiny()
    with torch.no_grad():
        from_uint8 = model.encode(frames())
        from_float = model.encode(frames().float() / 255)
    torch.testing.assert_close(from_uint8[0], from_float[0])


def test_decoding_a_level_ignores_every_other_level():
    model = tiny()
    with torch.no_grad():
        sequence = model.latent_sequence(frames())
        scrambled = torch.randn_like(sequence) * 5
        level_one = model.token_levels == 1
        scrambled[:, level_one] = sequence[:, level_one]
        levels = torch.ones(2, dtype=torch.long)
        original = model.decode_sequence(sequence, levels)
        changed = model.decode_sequence(scrambled, levels)
        direct = model.decode_pyramid(sequence[:, level_one], level=1)
    for a, b, c in zip(original, changed, direct, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    # and the decoded level does matter: a different level's latent changes the output
    assert not torch.allclose(original[0], model.decode_sequence(sequence, levels * 0)[0])


@pytest.mark.parametrize("training, coarse_trains_encoder", [("decoder", False), ("end_to_end", True)])
def test_downscaled_coarse_levels_train_the_encoder_only_end_to_end(training, coarse_trains_encoder):
    model = tiny("downscaled", downscaled_training=training).train()

    def encoder_gradient(level: int) -> float:
        model.zero_grad()
        pyramid = model(frames(), torch.full((2,), level))
        sum(image.square().mean() for image in pyramid).backward()
        return sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)

    assert encoder_gradient(0) > 0  # the finest level always trains the encoder
    assert all((encoder_gradient(level) > 0) == coarse_trains_encoder for level in (1, 2))
    assert model.patch_out.weight.grad.abs().sum() > 0  # and every level trains the decoder


def test_downscaled_latents_are_pooled_finest_latents():
    model = tiny("downscaled")
    with torch.no_grad():
        latents = model.encode(frames())
    finest = rearrange(latents[0], "b (gh gw) c -> b c gh gw", gh=8)
    for level in (1, 2):
        pooled = rearrange(F.avg_pool2d(finest, 2**level), "b c gh gw -> b (gh gw) c")
        torch.testing.assert_close(latents[level], pooled)
    torch.testing.assert_close(model.decode_level_from_finest(latents[0], 2), model.decode(latents[2], 2))


def test_pool_latent_keeps_level_zero():
    latent = torch.rand(1, 16, 3)
    assert pool_latent(latent, 0) is latent
    assert pool_latent(latent, 2).shape == (1, 1, 3)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.zeros(2, 3, 8, 8), r"\(b 3 16 16\)"),
        (torch.zeros(2, 16, 16, 3), r"\(b 3 16 16\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.int32), "uint8 or floating"),
    ],
)
def test_bad_frames_get_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny().encode(bad)


def test_bad_latent_or_level_gets_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"level-1 latent must be \(b 16 4\)"):
        model.decode(torch.zeros(1, 64, 4), 1)
    with pytest.raises(ValueError, match="outside"):
        model.decode(torch.zeros(1, 4, 4), 3)


def test_runs_under_bf16_autocast_close_to_float32():
    model = tiny()
    levels = torch.tensor([0, 2])
    with torch.no_grad():
        reference = model(frames(), levels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(frames(), levels)
    assert low[0].dtype == torch.bfloat16
    for a, b in zip(reference, low, strict=True):
        torch.testing.assert_close(b.float(), a, atol=0.05, rtol=0)


def test_backward_under_autocast_reaches_every_parameter():
    model = tiny().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = model(frames(), torch.tensor([0, 1]))
    sum(level.float().square().mean() for level in pyramid).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = tiny("downscaled")
    uri = str(tmp_path / "ae.pt")
    save_autoencoder(model, uri)
    plain = torch.load(uri, weights_only=True)
    assert plain["size"] == SIZE and "variant" in plain["config"]
    loaded = load_autoencoder(uri)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(frames())[1], model.encode(frames())[1])


def test_checkpoint_on_an_fsspec_uri():
    uri = "memory://checkpoints/ae.pt"
    save_autoencoder(tiny(), uri)
    assert load_autoencoder(uri).geometry == LevelGeometry(16, 2, 3)


def test_corrupt_or_foreign_checkpoints_are_named(tmp_path):
    truncated = tmp_path / "truncated.pt"
    buffer = io.BytesIO()
    torch.save(autoencoder_state(tiny()), buffer)
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_autoencoder(str(truncated))
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a millivid.autoencoder/1"):
        load_autoencoder(str(foreign))
    mismatched = tmp_path / "mismatched.pt"
    state = autoencoder_state(tiny())
    state["config"] = state["config"].replace('"latent_channels":4', '"latent_channels":8')
    torch.save(state, mismatched)
    with pytest.raises(ValueError, match="mismatched.pt: invalid autoencoder checkpoint"):
        load_autoencoder(str(mismatched))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_autoencoder(str(tmp_path / "missing.pt"))
