"""Reach and per-level latent memory in the evaluation, on test_eval_protocol's toy episodes.

Rollout frames are split by whether the revisited context frame was within the method's reach, and
every level's latents of revisit frames are compared with the true ones, for methods and for the
latent references (copy_revisited, context_mean, random_frames).
"""

import io
import json

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from einops import rearrange, reduce
from eval_toys import TOY_EVAL, Perfect, toy_decode, write_eval_data
from PIL import Image
from toys import TOKENS

from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.dit import build_dit
from millivid.diffusion.schedule import Reach, build_schedule
from millivid.diffusion.schedules import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
)
from millivid.eval.compare import evaluate_methods, evaluate_subset, finish, merge_subsets
from millivid.eval.fvd import quality_networks
from millivid.eval.latent_memory import (
    COPY_REVISITED,
    LATENT_REFERENCES,
    frame_mse,
    reference_latents,
)
from millivid.eval.methods import DiffusionMethod, reencode_frames
from millivid.eval.protocol import (
    EvalData,
    Generated,
    draw_examples,
    load_window,
    revisit_frames,
    rollout_batch,
    window_revisits,
)
from millivid.eval.references import CONTEXT_MEAN, RANDOM_FRAMES, RandomFrames, standard_references
from millivid.eval.tables import LATENT_MEMORY_SCHEMA, metric_matrix, read_parquet, where
from millivid_dashboards.tables import consistency_table, latent_memory_table
from millivid_platform.evaluation_stage import summary_numbers

C, R = TOY_EVAL.context, TOY_EVAL.rollout


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> EvalData:
    return write_eval_data(tmp_path_factory.mktemp("memory-data"))


def toy_reencode(finest: torch.Tensor) -> list[torch.Tensor]:
    """The toy autoencoder's encode of its decode: every level pooled from the decoded frame."""
    frames = toy_decode(finest, 0)
    return [reduce(frames, "b c (h p) (w q) -> b (h w) c", "mean", p=4 * 2**level, q=4 * 2**level) for level in range(len(TOKENS))]


class CopyRevisited(Perfect):
    """Perfect frames, and as latents the true latents of the revisited context frame (the copy
    oracle's); says every rollout frame saw the last half of the context."""

    def __call__(self, batch):
        windows = [load_window(self.data, example, TOY_EVAL) for example in batch.examples]
        copies = [reference_latents(w.latents, w.latents, revisit_frames(w.pose, TOY_EVAL), C)[COPY_REVISITED] for w in windows]
        visible = np.zeros((R, C), bool)
        visible[:, C // 2 :] = True
        latents = tuple(np.stack(levels) for levels in zip(*copies, strict=True))
        return Generated(super().__call__(batch), latents, visible, Reach(C // 2, {0: C // 2}))


def test_frame_mse_and_the_latent_references_by_hand():
    window = [np.arange(6 * 2 * 1, dtype=np.float32).reshape(6, 2, 1)]  # C=4, R=2: frame t holds (2t, 2t+1)
    donor = [np.full((2, 2, 1), 100.0, np.float32)]
    references = reference_latents(window, donor, np.array([1, -1]), context=4)
    np.testing.assert_array_equal(references[COPY_REVISITED][0], window[0][[1, 3]])  # no revisit: last context frame
    np.testing.assert_array_equal(references[CONTEXT_MEAN][0], [[[3.0], [4.0]]] * 2)
    np.testing.assert_array_equal(references[RANDOM_FRAMES][0], donor[0])
    np.testing.assert_array_equal(frame_mse(references[CONTEXT_MEAN][0], window[0][4:]), [25.0, 49.0])


@pytest.fixture(scope="module")
def copied(data, lpips):
    """CopyRevisited on every example by one worker: (examples, quality networks, SubsetResult)."""
    examples = draw_examples(data.frames, TOY_EVAL)
    quality = quality_networks(TOY_EVAL)
    return examples, quality, evaluate_subset(examples, range(len(examples)), {"copy": CopyRevisited(data)}, {}, data, TOY_EVAL, lpips=lpips, quality=quality)


def test_a_candidate_equal_to_the_copy_oracle_scores_the_oracle(copied):
    examples, _, whole = copied
    result = finish(whole, examples, ["copy"], [], TOY_EVAL)
    memory = result.summary["latent_memory"]
    assert memory["available"] and list(memory["levels"]) == [str(level) for level in range(len(TOKENS))]
    for level, entries in memory["levels"].items():
        assert list(entries) == ["copy", *LATENT_REFERENCES]
        copy, oracle = entries["copy"], entries[COPY_REVISITED]
        assert copy["mse"] == oracle["mse"] and copy["frames"] == oracle["frames"] > 0
        assert copy["vs_copy_revisited"]["mean"] == copy["vs_copy_revisited"]["ci_high"] == 0
        assert not copy["derived"] and oracle["reference"] and not copy["reference"]
        frames = result.latent_memory.filter(pc.equal(result.latent_memory["level"], int(level)))
        mine, theirs = (where(frames, candidate=name)["mse"] for name in ("copy", COPY_REVISITED))
        assert mine.equals(theirs)
    revisits = metric_matrix(result.rows, "copy", "revisit").astype(bool)
    assert memory["levels"]["0"]["copy"]["frames"] == revisits.sum()  # one row per revisit frame and level


def test_the_random_frames_latent_reference_uses_the_pixel_references_donor(data, lpips):
    examples = draw_examples(data.frames, TOY_EVAL)[:1]
    part = evaluate_subset(examples, [0], {"copy": CopyRevisited(data)}, {}, data, TOY_EVAL, lpips=lpips)
    window = load_window(data, examples[0], TOY_EVAL)
    revisit = np.flatnonzero(revisit_frames(window.pose, TOY_EVAL) >= 0)
    donor = RandomFrames(data, TOY_EVAL).donor_latents(examples[0])
    rows = where(part.latent_memory, candidate=RANDOM_FRAMES, level=0)
    np.testing.assert_array_equal(rows["frame"].to_numpy(), revisit)
    np.testing.assert_allclose(rows["mse"].to_numpy(), frame_mse(donor[0], window.latents[0][C:])[revisit])
    assert rows["within_reach"].null_count == len(rows) and not pc.any(rows["derived"]).as_py()


def test_two_workers_give_one_workers_latent_memory(copied, data, lpips):
    examples, quality, whole = copied
    methods = {"copy": CopyRevisited(data)}
    parts = [evaluate_subset(examples, part, methods, {}, data, TOY_EVAL, lpips=lpips, quality=quality) for part in ([3, 0], [2, 1])]
    merged = merge_subsets(parts)
    assert merged.latent_memory.equals(whole.latent_memory) and merged.latent_memory.schema == LATENT_MEMORY_SCHEMA
    assert merged.rows.equals(whole.rows) and merged.reach == whole.reach == {"copy": Reach(C // 2, {0: C // 2})}
    assert finish(merged, examples, ["copy"], [], TOY_EVAL).summary == finish(whole, examples, ["copy"], [], TOY_EVAL).summary


def hand_visible(first_seen: list[int]) -> np.ndarray:
    """(R, C): rollout frame r sees context frames from first_seen[r] on (C: none)."""
    return np.arange(C)[None, :] >= np.array(first_seen)[:, None]


# full_res with 12-frame steps: 6 context frames, 6 new, so rollout frames 0..5 see context 2..7 and
# frames 6, 7 (made from frames 8..13) see none. millivid windows (1, 2, 4), 4 extra coarsest frames:
# the first chunk makes frames 0..3 from context 1..7, the second frames 4..7 from context 5..7.
# FramePack denoising 2 frames after 2 context frames per level sees 6 frames back, 2 fewer a step.
SCHEDULES = {
    "full_res": (FullResScheduleConfig(frames=12), hand_visible([2] * 6 + [C] * 2), Reach(6, {0: 6})),
    "millivid": (MilliVidScheduleConfig(windows=(1, 2, 4), extra_budget=4), hand_visible([1] * 4 + [5] * 4), Reach(7, {0: 2, 1: 2, 2: 7})),
    "framepack": (FramePackScheduleConfig(denoised=2, context=(2, 2, 2)), hand_visible([2, 2, 4, 4, 6, 6, C, C]), Reach(6, {0: 6})),
}


@pytest.fixture(scope="module")
def diffusion(data, lpips):
    methods = {}
    for name, (config, _, _) in SCHEDULES.items():
        schedule = build_schedule(config, TOKENS, name)
        torch.manual_seed(0)
        model = build_dit(DiTConfig(width=16, depth=1, heads=2), 3, TOKENS, schedule.context_source).eval()
        methods[name] = DiffusionMethod(model, schedule, SamplerConfig(steps=2, batch_size=4), toy_decode, toy_reencode, precision="fp32")
    examples = draw_examples(data.frames, TOY_EVAL)
    references = standard_references(data, TOY_EVAL, decode=toy_decode)
    return methods, evaluate_methods(examples, methods, references, data, TOY_EVAL, lpips=lpips)


def test_within_reach_follows_each_schedules_plan(diffusion, data):
    methods, result = diffusion
    examples = draw_examples(data.frames, TOY_EVAL)
    windows = [load_window(data, e, TOY_EVAL) for e in examples]
    batch = rollout_batch(examples[:1], windows[:1], TOY_EVAL)
    revisited = np.stack([window_revisits(window.pose, TOY_EVAL)[1] for window in windows])  # (n R C)
    seen = set()
    for name, (_, visible, reach) in SCHEDULES.items():
        assert methods[name].schedule.reach == reach
        generated = methods[name](batch)
        np.testing.assert_array_equal(generated.visible, visible)
        for level in generated.derived:  # the finest latents re-encoded, by the rollout itself for FramePack
            finest = torch.from_numpy(rearrange(generated.latents[0], "b t n c -> (b t) n c"))
            np.testing.assert_allclose(rearrange(generated.latents[level], "b t n c -> (b t) n c"), toy_reencode(finest)[level].numpy(), atol=1e-6)
        revisit_of = metric_matrix(result.rows, name, "revisit_of").astype(int)
        within = metric_matrix(result.rows, name, "within_reach")
        # within reach: some context frame the frame revisits (a view may recur in the context) was visible
        expected = np.where(revisited.any(axis=2), (visible & revisited).any(axis=2), np.nan)
        assert np.array_equal(revisit_of >= 0, revisited.any(axis=2))
        np.testing.assert_array_equal(within, expected)
        seen |= set(within[revisit_of >= 0].tolist())
        entry = result.summary["per_method"][name]
        assert entry["reach"] == {"overall": reach.overall, "per_level": {str(k): v for k, v in reach.per_level.items()}}
        assert entry["revisit_within_reach"]["frames"] + entry["revisit_out_of_reach"]["frames"] == entry["revisit"]["frames"]
        assert entry["revisit_within_reach"]["frames"] == int(np.nansum(expected))
    assert seen == {0.0, 1.0}  # the examples hold revisits both within and out of reach
    for name in result.summary["references"]:
        entry = result.summary["per_method"][name]
        assert entry["reach"] is entry["revisit_within_reach"] is entry["revisit_out_of_reach"] is None
    assert metric_matrix(result.rows, CONTEXT_MEAN, "within_reach").size and np.isnan(metric_matrix(result.rows, CONTEXT_MEAN, "within_reach")).all()


def test_levels_a_schedule_does_not_denoise_are_derived(diffusion):
    _, result = diffusion
    levels = result.summary["latent_memory"]["levels"]
    for name in ("full_res", "framepack"):
        assert [levels[str(level)][name]["derived"] for level in range(len(TOKENS))] == [False, True, True]
    assert not any(levels[str(level)]["millivid"]["derived"] for level in range(len(TOKENS)))
    assert not any(levels[str(level)][name]["derived"] for level in range(len(TOKENS)) for name in LATENT_REFERENCES)
    table = result.latent_memory
    full_res = where(table, candidate="full_res")
    np.testing.assert_array_equal(full_res["derived"].to_numpy(zero_copy_only=False), full_res["level"].to_numpy() > 0)
    assert len(where(full_res, level=2)) == len(where(full_res, level=0)) > 0  # derived levels are measured too
    mine = where(table, candidate="millivid", level=0)
    rows = result.rows.filter(pc.and_(pc.equal(result.rows["method"], "millivid"), result.rows["revisit"]))
    assert mine["within_reach"].equals(rows["within_reach"])  # same frames, same order (example, frame)


def test_summary_plot_report_and_mlflow_numbers(diffusion, tmp_path):
    _, result = diffusion
    summary = result.summary
    json.dumps(summary, allow_nan=False)
    for name in summary["methods"]:
        assert {"reach", "revisit_within_reach", "revisit_out_of_reach"} <= set(summary["per_method"][name])
        assert {"lpips", "psnr", "ssim", "frames", "examples"} <= set(summary["per_method"][name]["revisit_out_of_reach"])
    memory = summary["latent_memory"]
    assert set(memory["references"]) == set(LATENT_REFERENCES)
    for entries in memory["levels"].values():
        assert list(entries) == [*summary["methods"], *LATENT_REFERENCES]
        for name in summary["methods"]:
            assert {"mse", "frames", "derived", "within_reach", "out_of_reach", "vs_context_mean", "vs_copy_revisited"} <= set(entries[name])
            assert entries[name]["vs_context_mean"]["examples"] > 0
    written = result.write(str(tmp_path / "out"))
    assert read_parquet(written["latent_memory"], LATENT_MEMORY_SCHEMA).equals(result.latent_memory)
    picture = Image.open(io.BytesIO((tmp_path / "out" / "plots" / "latent_memory.png").read_bytes()))
    assert picture.format == "PNG" and picture.size[0] > 100 and np.asarray(picture).std() > 0
    page = latent_memory_table(summary["latent_memory"]) + consistency_table(summary)
    assert "copy_revisited" in page and "(derived)" in page and "out of reach" in page
    logged = {f"summary/{name}/{key}" for name, key, mean in summary_numbers(summary) if mean is not None}
    assert {"summary/millivid/lpips_revisit_within_reach", "summary/millivid/lpips_revisit_out_of_reach"} <= logged
    assert {f"summary/{name}/latent_mse_revisit_level{level}" for name in ("millivid", *LATENT_REFERENCES) for level in range(3)} <= logged


def test_without_latents_latent_memory_is_skipped_with_a_note(data, lpips):
    frames_only = EvalData(data.frames)
    examples = draw_examples(data.frames, TOY_EVAL)[:2]
    result = evaluate_methods(examples, {"perfect": Perfect(data)}, {}, frames_only, TOY_EVAL, lpips=lpips)
    memory = result.summary["latent_memory"]
    assert memory["available"] is False and "latents" in memory["note"] and memory["levels"] == {}
    assert result.latent_memory is None and "plots/latent_memory.png" not in result.pictures
    assert result.summary["per_method"]["perfect"]["revisit_within_reach"] is None  # gave no visibility


def test_bad_latents_and_reserved_names_are_named(data, lpips):
    examples = draw_examples(data.frames, TOY_EVAL)[:1]

    def short_latents(batch):
        return Generated(Perfect(data)(batch), tuple(np.zeros((1, R, n - 1 if n > 1 else n, 3), np.float32) for n in TOKENS))

    with pytest.raises(ValueError, match=r"short: latents have shapes \[\(1, 8, 15, 3\)"):
        evaluate_subset(examples, [0], {"short": short_latents}, {}, data, TOY_EVAL, lpips=lpips)
    with pytest.raises(ValueError, match="latent reference names"):
        evaluate_subset(examples, [0], {COPY_REVISITED: Perfect(data)}, {}, data, TOY_EVAL, lpips=lpips)


def test_reencoded_levels_match_the_toy_codec():
    finest = torch.rand(2, 3, TOKENS[0], 3)
    levels = reencode_frames(toy_reencode, finest, chunk=4)
    assert [tuple(level.shape) for level in levels] == [(2, 3, n, 3) for n in TOKENS]
    flat = toy_reencode(rearrange(finest, "b t n c -> (b t) n c"))
    torch.testing.assert_close(levels[2], rearrange(flat[2], "(b t) n c -> b t n c", b=2))


def test_reach_contrast_separates_memory_from_rollout_position():
    """Two examples, four revisit frames each: the first two within our reach (early), the last two out.
    A rival that drifts like us scores the same margin on both: no memory. A margin that grows
    within reach is memory. Without visibility there is nothing to contrast."""
    from millivid.eval.config import EvalConfig
    from millivid.eval.summary import reach_contrast

    cfg = EvalConfig(bootstrap=200)
    drift = np.array([[0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6]])  # later frames are worse for everyone
    ours = {"lpips": drift, "revisit": np.ones((2, 4)), "within_reach": np.array([[1.0, 1.0, 0.0, 0.0]] * 2)}
    steady = reach_contrast(ours, {"lpips": drift + 0.05}, cfg)
    assert steady["within_reach"]["mean"] == pytest.approx(-0.05) and steady["out_of_reach"]["mean"] == pytest.approx(-0.05)
    assert steady["difference"]["mean"] == pytest.approx(0.0)
    remembers = reach_contrast({**ours, "lpips": drift - np.array([0.1, 0.1, 0.0, 0.0])}, {"lpips": drift + 0.05}, cfg)
    assert remembers["within_reach"]["mean"] == pytest.approx(-0.15) and remembers["difference"]["mean"] == pytest.approx(-0.1)
    assert reach_contrast({**ours, "within_reach": np.full((2, 4), np.nan)}, {"lpips": drift}, cfg) is None
