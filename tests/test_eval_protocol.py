"""The evaluation protocol and one comparison end to end, on a small dataset written by the test.

Episodes walk east for 24 frames, then turn in place (a full turn every 8 frames), so windows
late in an episode revisit context views and early ones do not. Latents are a toy pyramid of
the frames (mean-pooled 4x4 and 8x8 patches); decoding upsamples them back.
"""

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from einops import rearrange
from eval_toys import EPISODE, SIZE, TOY_EVAL, Perfect, episode, toy_decode, write_eval_data
from PIL import Image
from toys import TOKENS

from millivid.data.columns import DataError, frame_columns
from millivid.data.config import DataConfig, SplitConfig
from millivid.data.generate import render_dataset
from millivid.data.reader import open_dataset
from millivid.data.writer import write_dataset
from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.dit import build_dit
from millivid.diffusion.schedule import build_schedule
from millivid.diffusion.schedules import FullResScheduleConfig
from millivid.eval.compare import evaluate_methods, evaluate_subset, finish, merge_subsets
from millivid.eval.fvd import quality_networks
from millivid.eval.methods import DiffusionMethod
from millivid.eval.plots import revisit_share
from millivid.eval.protocol import (
    EvalData,
    Example,
    draw_examples,
    example_seed,
    load_window,
    nearest_pose_frames,
    revisit_frames,
    rollout_batch,
)
from millivid.eval.references import (
    CONTEXT_MEAN,
    COPY_LAST,
    GROUND_TRUTH_LATENTS,
    NEAREST_POSE,
    RANDOM_FRAMES,
    NearestPose,
    RandomFrames,
    standard_references,
)
from millivid.eval.revisits import clip_revisit_share
from millivid.eval.summary import crossing
from millivid.eval.tables import CURVE_SCHEMA, ROW_SCHEMA, metric_matrix, read_parquet, where
from millivid.video import read_video
from millivid_dashboards.tables import consistency_table, headline_section


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> EvalData:
    return write_eval_data(tmp_path_factory.mktemp("eval-data"))


def noise(batch):
    """Seeded per example: the same frames whichever batch the example is in."""
    return np.stack([np.random.default_rng(seed).random((batch.rollout, SIZE, SIZE, 3), dtype=np.float32) for seed in batch.seeds])


class LateNoise(Perfect):
    """Perfect for the first half of the rollout, then white noise: worse than random frames from there on."""

    def __call__(self, batch):
        frames = super().__call__(batch).astype(np.float32) / 255
        half = batch.rollout // 2
        frames[:, half:] = noise(batch)[:, half:]
        return frames


def test_examples_are_deterministic_spaced_and_ranked_by_revisits(data):
    examples = draw_examples(data.frames, TOY_EVAL)
    assert examples == draw_examples(data.frames, TOY_EVAL)
    assert len(examples) == TOY_EVAL.examples
    test_episodes = set(data.frames.episodes("test"))
    for i, example in enumerate(examples):
        assert example.index == i and example.seed == example_seed(TOY_EVAL.seed, i)
        assert example.episode in test_episodes
        assert 0 <= example.start <= EPISODE - TOY_EVAL.context - TOY_EVAL.rollout
    for a in examples:
        assert all(abs(a.start - b.start) >= TOY_EVAL.min_start_gap for b in examples if b is not a and b.episode == a.episode)
    counts = [example.revisits for example in examples]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    chosen = {(e.episode, e.start) for e in examples}
    shuffled = {(e.episode, e.start) for e in draw_examples(data.frames, TOY_EVAL.model_copy(update={"select": "random", "seed": 1}))}
    assert shuffled != chosen
    demanding = TOY_EVAL.model_copy(update={"min_revisit_share": 0.5})
    kept = draw_examples(data.frames, demanding)
    assert kept and all(e.revisits >= 0.5 * TOY_EVAL.rollout for e in kept)
    assert len(kept) < len(draw_examples(data.frames, demanding.model_copy(update={"min_revisit_share": 0.0, "examples": 64})))


def test_too_long_windows_are_a_clear_error(data):
    with pytest.raises(DataError, match=r"frames.*no test episode has the 80 frames"):
        draw_examples(data.frames, TOY_EVAL.model_copy(update={"rollout": 72}))


def test_windows_and_batches_hold_what_a_method_is_given(data):
    example = draw_examples(data.frames, TOY_EVAL)[0]
    window = load_window(data, example, TOY_EVAL)
    span = TOY_EVAL.context + TOY_EVAL.rollout
    assert window.frames.shape == (span, SIZE, SIZE, 3) and window.actions.shape == (span,)
    assert [latent.shape for latent in window.latents] == [(span, n, 3) for n in TOKENS]
    batch = rollout_batch([example], [window], TOY_EVAL)
    assert batch.context_frames.shape == (1, TOY_EVAL.context, SIZE, SIZE, 3)
    assert [c.shape for c in batch.context_latents] == [(1, TOY_EVAL.context, n, 3) for n in TOKENS]
    np.testing.assert_array_equal(batch.actions[0], window.actions)
    assert batch.seeds == [example.seed]


def test_references(data):
    examples = draw_examples(data.frames, TOY_EVAL)[:2]
    batch = rollout_batch(examples, [load_window(data, e, TOY_EVAL) for e in examples], TOY_EVAL)
    references = standard_references(data, TOY_EVAL, decode=toy_decode)
    assert list(references) == [CONTEXT_MEAN, COPY_LAST, NEAREST_POSE, RANDOM_FRAMES, GROUND_TRUTH_LATENTS]
    mean = references[CONTEXT_MEAN](batch)
    np.testing.assert_allclose(mean[0, 5], batch.context_frames[0].mean(axis=0) / 255, atol=1e-6)
    np.testing.assert_array_equal(references[COPY_LAST](batch)[1, -1], batch.context_frames[1, -1])
    truth = load_window(data, examples[0], TOY_EVAL)
    decoded = references[GROUND_TRUTH_LATENTS](batch)
    assert decoded.shape == (2, TOY_EVAL.rollout, SIZE, SIZE, 3)
    np.testing.assert_allclose(decoded[0].numpy(), rearrange(toy_decode(torch.from_numpy(truth.latents[0][TOY_EVAL.context :]), 0), "t c h w -> t h w c").numpy())
    nearest = references[NEAREST_POSE](batch)
    for row, example in enumerate(examples):
        pose = load_window(data, example, TOY_EVAL).pose
        exact = np.all(pose[TOY_EVAL.context :, None] == pose[None, : TOY_EVAL.context], axis=-1)  # (R C) same camera
        chosen = nearest_pose_frames(pose, TOY_EVAL)
        np.testing.assert_array_equal(nearest[row], batch.context_frames[row, chosen])
        assert exact.any() and exact[np.arange(TOY_EVAL.rollout), chosen][exact.any(axis=1)].all()  # an exact view wins
    pixels = RandomFrames(data, TOY_EVAL)  # no decoder: the donor's raw frames
    donor, start = pixels.donor(examples[0])
    assert donor != examples[0].episode and (donor, start) == pixels.donor(examples[0])
    np.testing.assert_array_equal(pixels(batch)[0], data.frames.read(donor, start + TOY_EVAL.context, start + TOY_EVAL.context + TOY_EVAL.rollout)["frames"])


def test_nearest_pose_shows_the_last_context_frame_where_the_pose_is_unknown(tmp_path):
    partly_known = episode(0)
    partly_known["pose"][40:] = np.nan
    write_dataset(str(tmp_path / "frames"), [("ep-0", partly_known)], frame_columns(SIZE))
    data = EvalData(open_dataset(str(tmp_path / "frames")))
    cfg = TOY_EVAL.model_copy(update={"select": "random"})
    example = Example(0, "ep-0", 30, 0, 0)  # context 30..37, rollout 38..45: frames 40..45 have no pose
    window = load_window(data, example, cfg)
    shown = NearestPose(data, cfg)(rollout_batch([example], [window], cfg))[0]
    chosen = nearest_pose_frames(window.pose, cfg)
    assert (chosen[:2] >= 0).all() and (chosen[2:] == -1).all()
    np.testing.assert_array_equal(shown[:2], window.frames[chosen[:2]])
    np.testing.assert_array_equal(shown[2:], np.broadcast_to(window.frames[cfg.context - 1], shown[2:].shape))


@pytest.fixture(scope="module")
def comparison(data, lpips):
    examples = draw_examples(data.frames, TOY_EVAL)
    methods = {"perfect": Perfect(data), "late_noise": LateNoise(data)}
    references = standard_references(data, TOY_EVAL, decode=toy_decode)
    seen = []
    result = evaluate_methods(examples, methods, references, data, TOY_EVAL, lpips=lpips, budget={"note": "test"}, progress=lambda d, t: seen.append((d, t)))
    return examples, methods, references, result, seen


def test_comparison_scores_and_summary(comparison, data):
    examples, methods, references, result, seen = comparison
    names = [*methods, *references]
    assert seen[-1] == (len(examples) * len(names),) * 2
    assert result.rows.schema == ROW_SCHEMA and result.rows.num_rows == len(names) * len(examples) * TOY_EVAL.rollout
    summary = result.summary
    json.dumps(summary, allow_nan=False)
    assert summary["methods"] == list(methods) and summary["references"] == list(references)
    assert summary["budget"] == {"note": "test"} and summary["lpips_backbone"] == "alex:random"
    assert summary["fvd"]["available"] is False and summary["fvd"]["reason"]
    assert [w["episode"] for w in summary["protocol"]["windows"]] == [e.episode for e in examples]
    perfect, noisy = summary["per_method"]["perfect"], summary["per_method"]["late_noise"]
    for entry in summary["per_method"].values():
        assert {"last_quarter", "last_half", "revisit", "sharpness_vs_truth", "crosses_random_frames", "vs_context_mean", "quality"} <= set(entry)
        assert {"lpips", "psnr", "ssim", "sharpness"} <= set(entry["last_half"])
        assert len(entry["quality"]["fvd_standin_randproj"]["per_chunk"]) == TOY_EVAL.rollout // TOY_EVAL.fvd_chunk
    assert perfect["last_half"]["lpips"]["mean"] == pytest.approx(0, abs=1e-6)
    assert perfect["last_quarter"]["psnr"]["mean"] == TOY_EVAL.psnr_cap
    assert perfect["crosses_random_frames"] == {"first": None, "sustained": None}
    assert perfect["vs_context_mean"]["last_half_lpips"]["ci_high"] < 0
    assert perfect["sharpness_vs_truth"]["mean"] == pytest.approx(1.0)
    assert perfect["quality"]["fvd_standin_randproj"]["pooled"] == pytest.approx(0, abs=1e-6)
    assert noisy["quality"]["fvd_standin_randproj"]["pooled"] > 0
    curves = {name: where(result.curves, method=name, metric="lpips", subset="all")["mean"].to_numpy() for name in ("late_noise", RANDOM_FRAMES)}
    assert noisy["crosses_random_frames"] == crossing(curves["late_noise"], curves[RANDOM_FRAMES])
    assert (noisy["crosses_random_frames"]["first"] or TOY_EVAL.rollout) >= TOY_EVAL.rollout // 2  # perfect until then
    assert perfect["revisit"]["frames"] > 0 and perfect["revisit"]["lpips"]["mean"] == pytest.approx(0, abs=1e-6)
    assert summary["per_method"][CONTEXT_MEAN]["vs_context_mean"] is None
    assert summary["per_method"][RANDOM_FRAMES]["crosses_random_frames"] is None
    assert summary["per_method"][CONTEXT_MEAN]["sharpness_vs_truth"]["mean"] < 0.2  # the blur is visible
    assert {CONTEXT_MEAN, NEAREST_POSE} <= set(summary["per_method"])  # the memory bars, in every summary
    assert summary["headline"] is None  # no method called eval.headline_method ("millivid") here
    first = result.rows.filter(pc.and_(pc.equal(result.rows["method"], "perfect"), pc.equal(result.rows["example"], examples[0].index)))
    revisit_of = revisit_frames(load_window(data, examples[0], TOY_EVAL).pose, TOY_EVAL)
    np.testing.assert_array_equal(first["revisit_of"].to_numpy(), revisit_of)  # which context frame each revisits


def test_outputs_are_written_and_read_back(comparison, tmp_path):
    *_, result, _ = comparison
    written = result.write(str(tmp_path / "out"))
    rows = read_parquet(written["rows"], ROW_SCHEMA)
    assert rows.equals(result.rows)
    curves = read_parquet(written["curves"], CURVE_SCHEMA)
    assert set(curves["metric"].to_pylist()) >= {"lpips", "psnr", "ssim", "sharpness", "fvd_standin_randproj"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["methods"] == ["perfect", "late_noise"]
    for name in ("plots/consistency.png", "plots/quality.png", "strips/example-0000.png"):
        picture = Image.open(io.BytesIO((tmp_path / "out" / name).read_bytes()))
        assert picture.format == "PNG" and picture.size[0] > 100
    video = read_video(written["videos/example-0000.mp4"])
    assert video.shape[0] == TOY_EVAL.video_context + TOY_EVAL.rollout
    frames, share = revisit_share(result.curves)  # the grey band along the bottom of every panel
    revisit = metric_matrix(result.rows, "perfect", "revisit").astype(bool)
    np.testing.assert_array_equal(frames, np.arange(TOY_EVAL.rollout))
    np.testing.assert_allclose(share, revisit.mean(axis=0))
    assert 0 < share.max() <= 1
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_bad_parquet_is_named(tmp_path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1 truncated")
    with pytest.raises(ValueError, match="rows.parquet: not a readable Parquet"):
        read_parquet(str(path))


def test_split_across_two_workers_gives_identical_numbers(data, lpips):
    examples = draw_examples(data.frames, TOY_EVAL)
    methods, references = {"noise": noise}, {COPY_LAST: standard_references(data, TOY_EVAL)[COPY_LAST]}
    quality = quality_networks(TOY_EVAL)
    whole = evaluate_methods(examples, methods, references, data, TOY_EVAL, lpips=lpips, quality=quality)
    parts = [evaluate_subset(examples, part, methods, references, data, TOY_EVAL, lpips=lpips, quality=quality) for part in ([3, 0], [2, 1])]
    merged = finish(merge_subsets(parts), examples, list(methods), list(references), TOY_EVAL)
    assert merged.rows.equals(whole.rows)
    assert_same_table(merged.curves, whole.curves)
    assert merged.summary == whole.summary
    assert merged.pictures.keys() == whole.pictures.keys()
    assert all(np.array_equal(merged.videos[name], video) for name, video in whole.videos.items())
    with pytest.raises(ValueError, match=r"overlap: example\(s\) \[0, 3\]"):
        merge_subsets([parts[0], parts[0]])


def assert_same_table(a: pa.Table, b: pa.Table) -> None:
    """Equal schemas and values, NaN equal to NaN (pyarrow's equals treats NaN as unequal)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        np.testing.assert_array_equal(a[name].to_numpy(zero_copy_only=False), b[name].to_numpy(zero_copy_only=False))


def test_a_wrong_rollout_shape_names_the_method(data, lpips):
    examples = draw_examples(data.frames, TOY_EVAL)[:1]
    bad = {"short": lambda batch: np.zeros((1, TOY_EVAL.rollout - 1, SIZE, SIZE, 3), np.uint8)}
    with pytest.raises(ValueError, match=r"short: rollout returned shape \(1, 7, 16, 16, 3\)"):
        evaluate_subset(examples, [0], bad, {}, data, TOY_EVAL, lpips=lpips)
    with pytest.raises(ValueError, match="unique"):
        evaluate_subset(examples, [0], {"copy_last": noise}, {"copy_last": noise}, data, TOY_EVAL, lpips=lpips)


def test_diffusion_method_rolls_out_from_the_context_latents(data, lpips):
    schedule = build_schedule(FullResScheduleConfig(frames=4), TOKENS, "full_res")
    torch.manual_seed(0)
    model = build_dit(DiTConfig(width=16, depth=1, heads=2), 3, TOKENS, schedule.context_source).eval()
    method = DiffusionMethod(model, schedule, SamplerConfig(steps=2, batch_size=2), decode=toy_decode, precision="fp32")
    cfg = TOY_EVAL.model_copy(update={"examples": 2, "rollout": 4, "fvd_chunk": 2, "videos": 0})
    examples = draw_examples(data.frames, cfg)
    batch = rollout_batch(examples, [load_window(data, e, cfg) for e in examples], cfg)
    generated = method(batch)
    frames = generated.frames
    assert frames.shape == (2, 4, SIZE, SIZE, 3) and 0 <= float(frames.min()) <= float(frames.max()) <= 1
    torch.testing.assert_close(method(batch).frames, frames)  # seeded by the examples
    assert [level.shape for level in generated.latents] == [(2, 4, n, 3) for n in TOKENS]
    assert generated.derived == (1, 2) and all(np.isnan(level).all() for level in generated.latents[1:])  # no reencode given
    part = evaluate_subset(examples, [0, 1], {"full_res": method}, {}, data, cfg, lpips=lpips)
    assert part.rows.num_rows == 2 * 4 and isinstance(part.rows, pa.Table)


def test_report_states_the_headline_and_shows_every_baseline(comparison):
    *_, result, _ = comparison
    verdict = {"method": "perfect", "holds": False, "quality_vs_full_res": None,
               "against": {CONTEXT_MEAN: {"revisit_lpips_difference": {"mean": -0.2, "ci_low": -0.3, "ci_high": -0.1}, "beats": True,
                                          "reach_contrast": {"within_reach": {"mean": -0.25, "ci_low": -0.4, "ci_high": -0.1},
                                                             "out_of_reach": {"mean": -0.15}, "difference": {"mean": -0.1}}},
                           "late_noise": {"revisit_lpips_difference": {"mean": 0.1, "ci_low": -0.1, "ci_high": 0.3}, "beats": False}}}
    summary = {**result.summary, "headline": verdict}
    page = headline_section(summary) + consistency_table(summary)
    assert "headline claim for perfect: <b class='verdict-fails'>does not hold</b>" in page
    assert "perfect beats context_mean on revisit frames" in page and "perfect does not beat late_noise" in page
    assert "within its reach -0.250 <small>[-0.400, -0.100]</small>, out of it -0.150, difference -0.100" in page
    assert all(f"<td>{name}</td>" in page for name in (CONTEXT_MEAN, NEAREST_POSE, RANDOM_FRAMES))


@pytest.fixture(scope="module")
def spins(tmp_path_factory):
    """Built-in world episodes that only turn in place: each spin turns a full circle (48 frames of
    7.5 degrees) in a direction drawn afresh."""
    cfg = DataConfig(episodes=3, frames=160, size=16, hold=3, policy="spin", split=SplitConfig(val=0, test=0))
    uri = str(tmp_path_factory.mktemp("spins") / "frames")
    render_dataset(cfg, uri)
    return open_dataset(uri), cfg.world.headings


def test_training_clips_that_turn_twice_all_revisit_their_context(spins):
    dataset, turn = spins
    context, span = 8, 8 + 2 * turn  # a spin can turn back before a full circle; within two its last context view returns >= a turn later
    every = clip_revisit_share(dataset, "train", span, context, radius=0.5, angle=5, min_gap=turn // 2)
    assert (every.clips, every.with_revisit, every.share) == (512, 512, 1.0) and 0 < every.revisit_frames_share < 1
    never = clip_revisit_share(dataset, "train", span, context, radius=0.5, angle=5, min_gap=span)
    assert (never.with_revisit, never.share, never.revisit_frames_share) == (0, 0.0, 0.0)


def test_clip_revisit_share_is_seeded(spins):
    dataset, turn = spins
    some = clip_revisit_share(dataset, "train", 8 + turn, 8, radius=0.5, angle=5, min_gap=turn - 1, clips=64, seed=3)
    assert 0 < some.share < 1 and some.revisit_frames_share <= some.share
    assert clip_revisit_share(dataset, "train", 8 + turn, 8, radius=0.5, angle=5, min_gap=turn - 1, clips=64, seed=3) == some


def test_clip_revisit_share_names_the_dataset_when_it_cannot_count(spins, data):
    dataset, _ = spins
    for context in (0, 16):
        with pytest.raises(ValueError, match=re.escape(f"{dataset.uri}: context {context} must be in 1..15")):
            clip_revisit_share(dataset, "train", 16, context, radius=0.5, angle=5, min_gap=1)
    with pytest.raises(DataError, match=re.escape(f"{dataset.uri}: no train episode has the 161 frames")):
        clip_revisit_share(dataset, "train", 161, 8, radius=0.5, angle=5, min_gap=1)
    with pytest.raises(DataError, match="latents: counting revisits needs a 'pose' column"):
        clip_revisit_share(data.latents, "train", 16, 8, radius=0.5, angle=5, min_gap=1)
