"""The diffusion training task: reproducible stratified batches, loss on DENOISED tokens only, evaluation."""

import io

import numpy as np
import pytest
import torch
from toys import CHANNELS, MILLIVID, TOKENS

from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.schedule import build_schedule
from millivid.diffusion.schedules import FullResScheduleConfig
from millivid.diffusion.task import DiffusionTask, InMemoryClips, Preview
from millivid.schema import TrainConfig
from millivid.training import Hooks, fit


def clips(videos: int = 3, frames: int = 40, seed: int = 0) -> InMemoryClips:
    rng = np.random.default_rng(seed)
    latents = [rng.uniform(-1, 1, (videos, frames, n, CHANNELS)).astype(np.float16) for n in TOKENS]
    return InMemoryClips(latents, rng.integers(0, 3, (videos, frames)).astype(np.int8))


def task(batch_size: int = 6, schedule=MILLIVID, **kwargs) -> DiffusionTask:
    return DiffusionTask(schedule, DiTConfig(width=32, depth=1, heads=2), CHANNELS, clips(), batch_size, **kwargs)


def test_batches_are_a_pure_function_of_step_and_rank():
    a, b = task().batch(7, 0, 1, torch.device("cpu")), task().batch(7, 0, 1, torch.device("cpu"))
    assert torch.equal(a.tokens.latent, b.tokens.latent) and torch.equal(a.levels, b.levels)
    assert not torch.equal(task().batch(8, 0, 1, torch.device("cpu")).tokens.latent, a.tokens.latent)
    sizes = [len(task(batch_size=7).batch(1, rank, 3, torch.device("cpu")).levels) for rank in range(3)]
    assert sizes == [3, 2, 2]


def test_levels_are_stratified_and_match_the_sampled_steps():
    batch = task(batch_size=6).batch(3, 0, 1, torch.device("cpu"))
    assert sorted(batch.levels.tolist()) == [0, 0, 1, 1, 2, 2]
    for example, level in enumerate(batch.levels):
        assert (batch.tokens.level[example][batch.tokens.denoised[example]] == level).all()
    assert not batch.tokens.padded  # every millivid step has the same token count


def test_loss_reaches_only_denoised_tokens_and_reports_every_level():
    work = task()
    model = work.build_model()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)  # let the output depend on the input
    outputs = []

    def keep_output(module, args, out):
        out.retain_grad()
        outputs.append(out)

    model.head.register_forward_hook(keep_output)
    batch = work.batch(1, 0, 1, torch.device("cpu"))
    loss, metrics = work.loss(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    grad = outputs[0].grad.abs().sum(-1)
    assert (grad[~batch.tokens.denoised] == 0).all() and (grad[batch.tokens.denoised] > 0).all()
    assert sorted(metrics) == ["train/loss_level0", "train/loss_level1", "train/loss_level2"]
    assert loss.item() == pytest.approx(np.mean(list(metrics.values())), rel=1e-5)  # two examples per level
    _, few = task(batch_size=2).loss(model, task(batch_size=2).batch(1, 0, 1, torch.device("cpu")), torch.Generator().manual_seed(0))
    assert few == {}  # fewer examples than levels: no per-level keys at all, so every step logs the same keys


def test_clip_source_problems_name_the_key():
    work = task()
    bad = {"latent_0": np.zeros((6, MILLIVID.span, 16, CHANNELS)), "latent_1": np.zeros((6, MILLIVID.span, 4, CHANNELS))}

    class Fixed:
        def __init__(self, clips):
            self.clips = clips

        def sample(self, rng, batch, length):
            return self.clips

    for clips_, message in [
        (bad, "latent_2"),
        (bad | {"latent_2": np.zeros((6, MILLIVID.span, 2, CHANNELS))}, "latent_2 must be"),
        (bad | {"latent_2": np.zeros((6, MILLIVID.span, 1, CHANNELS)), "actions": np.full((6, MILLIVID.span), 5)}, "unknown actions"),
    ]:
        with pytest.raises(ValueError, match=message):
            DiffusionTask(MILLIVID, work.model_config, CHANNELS, Fixed(clips_), 6).batch(1, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="clips of 99 frames"):
        clips().sample(np.random.default_rng(0), 1, 99)


def test_in_memory_clips_are_consecutive_frames_of_one_video():
    source = clips()
    sample = source.sample(np.random.default_rng(1), 4, 5)
    for example in range(4):
        matches = [(v, s) for v in range(3) for s in range(36) if np.array_equal(source.latents[0][v, s : s + 5], sample["latent_0"][example])]
        (video, start), = matches
        assert np.array_equal(source.actions[video, start : start + 5], sample["actions"][example])


def test_fit_trains_evaluates_and_checkpoints_loadable_with_weights_only():
    def decode(latent, level):
        return latent[..., :3].reshape(latent.shape[0], 4, 4, 3).permute(0, 3, 1, 2) * 0.5 + 0.5

    schedule = build_schedule(FullResScheduleConfig(frames=4), TOKENS)
    work = task(schedule=schedule, preview=Preview(decode, SamplerConfig(steps=2, batch_size=1), frames=3))
    states, evaluations = [], []
    cfg = TrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=2, eval_every=4, checkpoint_every=4)
    fit(work, cfg, hooks=Hooks(checkpoint=lambda step, state: states.append(state), evaluation=lambda step, result: evaluations.append(result)))
    (result,) = evaluations
    assert sorted(result.metrics) == ["loss", "loss_level0"] and np.isfinite(result.metrics["loss"])
    assert result.images["rollout"].startswith(b"\x89PNG")
    buffer = io.BytesIO()
    torch.save(states[-1], buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    model = work.build_model()
    model.load_state_dict(restored["model"])
    again = work.evaluate(model, torch.device("cpu")).metrics
    assert again["loss"] == pytest.approx(result.metrics["loss"], rel=1e-2)  # fixed held-out clips, times and noise


def test_activation_checkpointing_changes_memory_not_results():
    plain, checkpointed = task(), task(activation_checkpointing=True)
    batch = plain.batch(1, 0, 1, torch.device("cpu"))
    results = []
    for work in (plain, checkpointed):
        torch.manual_seed(0)
        model = work.build_model()
        loss, _ = work.loss(model, batch, torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert checkpointed.build_model().checkpoint_blocks and not plain.build_model().checkpoint_blocks
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][1], results[1][1], strict=True))


@pytest.mark.slow
def test_fit_with_torch_compile_checkpoints_the_plain_weights():
    """torch.compile (inductor on CPU) trains; checkpoints and the returned model are the plain module."""
    states = []
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1, eval_every=10, checkpoint_every=2)
    model = fit(task(), cfg, hooks=Hooks(checkpoint=lambda step, state: states.append(state)), precision="fp32", compile=True)
    assert type(model).__name__ == "DiT" and not any(key.startswith("_orig_mod") for key in states[-1]["model"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
