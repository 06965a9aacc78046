"""The autoencoder task in the generic training loop, its evaluation and the batch encoder."""

import json

import numpy as np
import pytest
import torch
from toys import TINY_AE

from millivid.ae.config import AutoencoderConfig, AutoencoderLossConfig
from millivid.ae.encode import encode_frames
from millivid.ae.evaluate import compare_variants, evaluate_autoencoder
from millivid.ae.frames import ArrayFrames, StoreFrames, synthetic_frames, to_tensor
from millivid.ae.loss import pyramid_loss
from millivid.ae.pyramid import image_pyramid
from millivid.ae.task import AutoencoderTask, level_probabilities, sample_levels, variant_config
from millivid.data.columns import DataError, frame_columns
from millivid.data.config import SplitConfig
from millivid.data.reader import open_dataset
from millivid.data.writer import write_dataset
from millivid.training import Hooks, fit, step_generator

SIZE = 16


def config(steps=3, lpips_weight=0.05, variant="hierarchical", **train):
    return AutoencoderConfig.model_validate(
        {
            "model": {**TINY_AE, "variant": variant},
            "loss": {"lpips_weight": lpips_weight},
            "lpips": {"net": "alex", "backbone": "random"},
            "train": {"steps": steps, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "log_every": 1, **train},
        }
    )


@pytest.fixture(scope="module")
def source():
    return ArrayFrames(synthetic_frames(32, SIZE, seed=0), synthetic_frames(6, SIZE, seed=1))


def test_batches_are_a_pure_function_of_seed_step_and_rank(source):
    task = AutoencoderTask(config(), SIZE, source)
    cpu = torch.device("cpu")
    first = task.batch(7, 0, 2, cpu)
    assert first.shape == (2, 3, SIZE, SIZE) and first.dtype == torch.uint8
    assert torch.equal(first, AutoencoderTask(config(), SIZE, source).batch(7, 0, 2, cpu))
    assert not torch.equal(first, task.batch(7, 1, 2, cpu))
    assert not torch.equal(first, task.batch(8, 0, 2, cpu))


def test_ranks_share_the_batch_size(source):
    task = AutoencoderTask(config(), SIZE, source)
    shares = [task.batch(1, rank, 3, torch.device("cpu")).shape[0] for rank in range(3)]
    assert shares == [2, 1, 1]
    with pytest.raises(ValueError, match="batch_size 4 leaves rank 4 of 5"):
        task.batch(1, 4, 5, torch.device("cpu"))


def test_loss_is_float32_with_per_level_metrics_under_autocast(source, lpips):
    task = AutoencoderTask(config(), SIZE, source, lpips=lpips)
    model = task.build_model()
    batch = task.batch(1, 0, 1, torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = task.loss(model, batch, step_generator(0, 1, 0))
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert set(metrics) == {"train/mse_level0", "train/mse_level1", "train/mse_level2", "train/lpips_level0"}
    # 0-d tensors without history: the loop averages them on the device and syncs at log steps only
    assert all(value.ndim == 0 and not value.requires_grad for value in metrics.values())


def test_pyramid_loss_weights_level_l_by_base_to_the_l():
    target = image_pyramid(torch.zeros(1, 3, 8, 8), 3)
    recon = [level + 0.1 for level in target]
    loss, _ = pyramid_loss(recon, target, AutoencoderLossConfig(level_weight_base=4.0, lpips_weight=0.0), None)
    assert float(loss) == pytest.approx(0.01 * (1 + 4 + 16), rel=1e-5)
    with pytest.raises(ValueError, match="needs an LPIPS network"):
        pyramid_loss(recon, target, AutoencoderLossConfig(lpips_weight=0.5), None)


@pytest.mark.parametrize("base, expected", [(1.0, [1 / 3] * 3), (2.0, [1 / 7, 2 / 7, 4 / 7]), (4.0, [1 / 21, 4 / 21, 16 / 21])])
def test_training_levels_are_drawn_with_probability_base_to_the_l(base, expected):
    cfg = AutoencoderConfig.model_validate({"model": TINY_AE, "loss": {"level_sampling_base": base}})
    assert level_probabilities(cfg).tolist() == pytest.approx(expected)
    levels = sample_levels(cfg, 30_000, torch.Generator().manual_seed(0))
    assert levels.dtype == torch.int64 and set(levels.tolist()) == {0, 1, 2}
    assert (torch.bincount(levels, minlength=3) / len(levels)).tolist() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("base", [0, -1, float("inf"), float("nan")])
def test_level_sampling_base_must_be_positive_and_finite(base):
    with pytest.raises(ValueError, match="level_sampling_base"):
        AutoencoderConfig.model_validate({"loss": {"level_sampling_base": base}})


def test_overfits_a_few_frames(lpips):
    # 200 steps (about a second): at 50 the finest level has barely moved from the mean frame,
    # since the loss weights the coarsest level 16x; by 200 every seed tried is at 7-15% of it
    frames = synthetic_frames(4, SIZE, seed=3)
    cfg = config(steps=200, lpips_weight=0.0, lr=5e-3, warmup_steps=5, log_every=10, eval_every=1000, checkpoint_every=1000)
    losses = []
    fit(AutoencoderTask(cfg, SIZE, ArrayFrames(frames, frames), lpips=lpips), cfg.train,
        hooks=Hooks(progress=lambda step, total, metrics: losses.append(metrics["train/loss"])))
    # the best reconstruction that ignores the latent: every frame's pixels predicted by the mean frame
    target = image_pyramid(to_tensor(frames).float() / 255, 3)
    mean_frame = [level.mean(0, keepdim=True).expand_as(level) for level in target]
    baseline, _ = pyramid_loss(mean_frame, target, cfg.loss, None)
    assert np.mean(losses[-2:]) < 0.3 * float(baseline)


@pytest.mark.parametrize("variant,precision", [("hierarchical", "bf16"), ("downscaled", "fp32")])
def test_tiny_training_run_through_fit(source, lpips, variant, precision):
    cfg = config(steps=4, variant=variant, eval_every=2, checkpoint_every=2)
    task = AutoencoderTask(cfg, SIZE, source, eval_frames=4, grid_frames=2, lpips=lpips)
    evaluations, checkpoints = [], []
    model = fit(task, cfg.train, precision=precision, hooks=Hooks(evaluation=lambda step, e: evaluations.append(e),
                                              checkpoint=lambda step, state: checkpoints.append(state)))
    assert model.config.variant == variant
    assert len(evaluations) == 2 and [state["step"] for state in checkpoints] == [2, 4]
    metrics = evaluations[-1].metrics
    assert set(metrics) == {f"{name}_level{level}" for name in ("psnr", "ssim", "lpips") for level in range(3)}
    assert all(np.isfinite(value) for value in metrics.values())
    assert evaluations[-1].images["reconstructions.png"].startswith(b"\x89PNG")
    rebuilt = task.build_model()
    rebuilt.load_state_dict(checkpoints[-1]["model"])
    logged = {key for _, row in checkpoints[-1]["metrics"] for key in row}
    assert {"train/mse_level2", "eval/psnr_level0"} <= logged


def test_variant_config_changes_only_the_variant():
    cfg = config()
    down = variant_config(cfg, "downscaled")
    assert down.model.variant == "downscaled"
    assert down.model_dump()["train"] == cfg.model_dump()["train"]
    with pytest.raises(ValueError):
        variant_config(cfg, "sideways")


def test_frame_source_rejects_bad_arrays():
    good = synthetic_frames(2, SIZE)
    with pytest.raises(ValueError, match="train frames"):
        ArrayFrames(good.astype(np.float32), good)
    with pytest.raises(ValueError, match="held_out frames"):
        ArrayFrames(good, good[:0])


def write_frames_dataset(uri, episodes=5, length=12, held_out=0.2):
    def episode(index):
        return {"frames": synthetic_frames(length, SIZE, seed=index), "actions": np.zeros(length, np.int8),
                "pose": np.zeros((length, 5), np.float32)}

    write_dataset(uri, ((f"ep-{i}", episode(i)) for i in range(episodes)), frame_columns(SIZE),
                  split=SplitConfig(val=held_out, test=held_out, seed=0))
    return open_dataset(uri)


def test_store_frames_come_from_the_right_splits(tmp_path):
    dataset = write_frames_dataset(str(tmp_path / "frames"))
    source = StoreFrames(dataset)
    train = {frame.tobytes() for e in dataset.episodes("train") for frame in dataset.read(e)["frames"]}
    val = {frame.tobytes() for e in dataset.episodes("val") for frame in dataset.read(e)["frames"]}
    drawn = source.sample(np.random.default_rng(0), 16)
    assert drawn.shape == (16, SIZE, SIZE, 3) and drawn.dtype == np.uint8
    assert {frame.tobytes() for frame in drawn} <= train
    np.testing.assert_array_equal(drawn, source.sample(np.random.default_rng(0), 16))
    held = source.held_out(6)
    assert len(held) == 6 and {frame.tobytes() for frame in held} <= val
    assert len({frame.tobytes() for frame in held}) == 6  # evenly spaced, no repeats
    assert len(source.held_out(1000)) == len(val)
    task = AutoencoderTask(config(), SIZE, source)
    assert task.batch(1, 0, 1, torch.device("cpu")).shape == (4, 3, SIZE, SIZE)


def test_store_frames_without_held_out_episodes_is_a_data_error(tmp_path):
    dataset = write_frames_dataset(str(tmp_path / "frames"), episodes=2, held_out=0.0)
    with pytest.raises(DataError, match="no test episodes"):
        StoreFrames(dataset, held_out_split="test").held_out(4)


def test_encode_frames_in_batches_matches_encode():
    task = AutoencoderTask(config(), SIZE, None)
    torch.manual_seed(0)
    model = task.build_model().eval()
    frames = synthetic_frames(10, SIZE, seed=2)
    progress = []
    latents = encode_frames(model, frames, batch_size=4, precision="fp32", progress=lambda done, total: progress.append(done))
    assert [latent.shape for latent in latents] == [(10, 64, 4), (10, 16, 4), (10, 4, 4)]
    assert all(latent.dtype == np.float16 for latent in latents)
    assert progress == [4, 8, 10]
    with torch.no_grad():
        direct = model.encode(to_tensor(frames))
    np.testing.assert_allclose(latents[1], direct[1].numpy(), atol=2e-3)
    bf16 = encode_frames(model, frames, batch_size=4)
    np.testing.assert_allclose(bf16[0], latents[0], atol=0.05)
    with pytest.raises(ValueError, match=r"\(n h w 3\) uint8"):
        encode_frames(model, frames.astype(np.float32))


def test_compare_variants_is_a_json_ready_table_per_level(lpips):
    frames = synthetic_frames(3, SIZE, seed=4)
    torch.manual_seed(0)
    models = {name: AutoencoderTask(config(variant=name), SIZE, None).build_model() for name in ("hierarchical", "downscaled")}
    table = json.loads(json.dumps(compare_variants(models, frames, lpips)))
    assert table["frames"] == 3 and table["lpips_backbone"] == "alex:random"
    assert [row["tokens"] for row in table["levels"]] == [64, 16, 4]
    assert set(table["levels"][2]["downscaled"]) == {"psnr", "ssim", "lpips"}
    single = evaluate_autoencoder(models["hierarchical"], frames, lpips)
    assert single["levels"][1] == {"level": 1, "tokens": 16, **table["levels"][1]["hierarchical"]}
    assert table["compared"] == ["hierarchical", "downscaled"]
    for row in table["levels"]:
        difference = row["psnr_difference"]
        assert difference["mean"] == pytest.approx(row["hierarchical"]["psnr"] - row["downscaled"]["psnr"], abs=1e-4)
        assert difference["ci_low"] <= difference["mean"] <= difference["ci_high"] and difference["examples"] == 3
    alone = compare_variants({"hierarchical": models["hierarchical"]}, frames, lpips)
    assert "psnr_difference" not in alone["levels"][0]
    other = AutoencoderTask(config(), 32, None).build_model()
    with pytest.raises(ValueError, match="one token geometry"):
        compare_variants({"a": models["hierarchical"], "b": other}, frames, lpips)
