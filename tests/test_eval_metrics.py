"""Evaluation building blocks on hand-made cases: per-frame metrics, bootstrap, crossing, revisits."""

import json
import math

import numpy as np
import pytest
import torch

from millivid.eval.config import EvalConfig
from millivid.eval.consistency import frame_metrics, sharpness, unit_frames
from millivid.eval.curves import ChunkDistances
from millivid.eval.fvd import STANDIN
from millivid.eval.revisits import nearest_context_frames, revisit_mask, revisited_frames
from millivid.eval.stats import bootstrap_mean
from millivid.eval.summary import crossing, headline, jsonable, masked_mean, window_start
from millivid.pose import YAW, X, camera_pose, view_distance
from millivid.world.agent import Walker
from millivid.world.config import WorldConfig
from millivid.world.policies import trajectory
from millivid.world.terrain import generate


def test_identical_frames_score_perfectly(lpips):
    frames = unit_frames(np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    values = frame_metrics(frames, frames, lpips, psnr_cap=100.0)
    assert set(values) == {"lpips", "psnr", "ssim", "sharpness"}
    np.testing.assert_allclose(values["lpips"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(values["psnr"], 100.0)  # infinite, capped
    np.testing.assert_allclose(values["ssim"], 1.0, atol=1e-5)
    assert all(v.shape == (3,) and v.dtype == np.float64 for v in values.values())


def test_metrics_order_a_small_and_a_large_error(lpips):
    truth = unit_frames(np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    slightly = (truth + 0.02).clamp(0, 1)
    noise = torch.rand(truth.shape, generator=torch.Generator().manual_seed(2))
    close, far = (frame_metrics(x, truth, lpips, 100.0) for x in (slightly, noise))
    assert (close["lpips"] < far["lpips"]).all()
    assert (close["psnr"] > far["psnr"]).all() and (close["ssim"] > far["ssim"]).all()
    assert close["psnr"][0] == pytest.approx(-10 * math.log10(float(((slightly[0] - truth[0]) ** 2).mean())), rel=1e-4)


def test_sharpness_is_zero_for_flat_and_drops_with_blur():
    flat = torch.full((1, 3, 16, 16), 0.5)
    checker = torch.zeros(1, 3, 16, 16)
    checker[..., ::2, ::2] = 1.0
    blurred = torch.nn.functional.avg_pool2d(checker, 3, stride=1, padding=1)
    values = sharpness(torch.cat([flat, checker, blurred]))
    assert values[0] == 0 and values[1] > 4 * values[2] > 0


def test_unit_frames_accepts_uint8_and_unit_floats_and_rejects_the_rest():
    frames = np.full((2, 4, 4, 3), 255, np.uint8)
    assert unit_frames(frames).shape == (2, 3, 4, 4) and float(unit_frames(frames).max()) == 1.0
    assert float(unit_frames(torch.full((1, 4, 4, 3), 1.0005)).max()) == 1.0  # clipped, not rejected
    with pytest.raises(ValueError, match=r"millivid.*\[0, 1\]"):
        unit_frames(np.full((1, 4, 4, 3), 2.0, np.float32), "millivid")
    with pytest.raises(ValueError, match=r"\(t h w 3\)"):
        unit_frames(np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="int64"):
        unit_frames(np.zeros((1, 4, 4, 3), np.int64))


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_examples():
    rng = np.random.default_rng(0)
    widths = []
    for n in (8, 32, 128):
        values = rng.normal(1.0, 1.0, size=(n, 5))
        curve = bootstrap_mean(values, resamples=400, seed=0)
        np.testing.assert_allclose(curve.mean, values.mean(axis=0))
        assert (curve.low <= curve.mean).all() and (curve.mean <= curve.high).all()
        assert (curve.count == n).all()
        widths.append(float((curve.high - curve.low).mean()))
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 / math.sqrt(128), rel=0.3)


def test_bootstrap_is_seeded_and_ignores_missing_values():
    values = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 5.0]])
    first, again = (bootstrap_mean(values, 100, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first.low, again.low)
    assert first.mean[1] == 5.0 and first.count.tolist() == [3, 1]
    assert first.low[1] == first.high[1] == 5.0
    empty = bootstrap_mean(np.full((3, 1), np.nan), 50, 0)
    assert empty.at(0) == {"mean": None, "ci_low": None, "ci_high": None, "examples": 0}


def test_crossing_first_and_sustained():
    reference = np.full(6, 0.5)
    assert crossing(np.array([0.1, 0.6, 0.4, 0.6, 0.7, 0.8]), reference) == {"first": 1, "sustained": 3}
    assert crossing(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.45]), reference) == {"first": None, "sustained": None}
    assert crossing(np.array([0.1, 0.6, 0.2, 0.2, 0.2, 0.2]), reference) == {"first": 1, "sustained": None}


def test_windows_and_masked_means():
    assert window_start(16, 4) == 12 and window_start(16, 2) == 8 and window_start(3, 4) == 2
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = np.array([[True, False, True], [False, False, False]])
    out = masked_mean(values, mask)
    assert out[0] == 2.0 and np.isnan(out[1])


def loop_track() -> np.ndarray:
    """Walk 10 steps east, turn around (yaw + pi), walk back west, turn again: a return trip."""
    east = [(0.2 * i, 0.0, 0.0) for i in range(10)]
    turn = [(1.8, 0.0, k * np.pi / 6) for k in range(1, 7)]
    west = [(1.8 - 0.2 * i, 0.0, np.pi) for i in range(1, 10)]
    back = [(0.0, 0.0, np.pi + k * np.pi / 6) for k in range(1, 7)]
    x, z, yaw = np.array(east + turn + west + back).T
    return camera_pose(x, 1.6, z, yaw, -0.1)


def test_revisits_need_the_same_place_and_view_after_leaving():
    pose = loop_track()  # 31 frames; context: the 10 eastward frames
    mask = revisit_mask(pose, context=10, radius=0.3, angle=35)
    assert mask.shape == (21,)
    # Walking back west faces the other way: no revisit until the final turn faces east again.
    assert not mask[:15].any()
    assert mask[-1] and mask[-2]  # back at the start point, yaw 2 pi and 2 pi - pi/6
    assert not mask[0]  # the first turning frame is still next to the last context frame: not a return
    assert mask.sum() == 2
    revisited = revisited_frames(pose, context=10, radius=0.3, angle=35)
    assert revisited[-1] == 0 and revisited[-2] == 0 and (revisited[:-2] == -1).all()  # both return to frame 0's view


def test_a_full_turn_in_place_revisits_exactly_the_context_views():
    """The built-in world's spin policy: 24 headings of 15 degrees; the context sees the first 8."""
    config = WorldConfig(turn_degrees=15)
    path = trajectory(Walker(generate([2, 0], config), config), np.random.default_rng(0), 48, 1, "spin")
    yaw_step = np.diff(np.unwrap(path.pose[:, YAW]))
    assert np.allclose(np.abs(yaw_step), np.radians(15)) and np.ptp(path.pose[:, X]) == 0
    context = 8
    revisited = revisited_frames(path.pose, context, radius=0.5, angle=7.0, min_gap=8)
    # Frame f (f >= 8) looks where frame f - 24 looked, one full turn earlier: frames 24..31
    # revisit context frames 0..7 once each; no other frame shares a context view.
    expected = np.full(48 - context, -1)
    expected[24 - context : 32 - context] = np.arange(8)
    np.testing.assert_array_equal(revisited, expected)
    # The nearest-pose baseline picks the same context frames there, and the closest view elsewhere.
    nearest = nearest_context_frames(path.pose, context, radius=0.5, angle=7.0)
    np.testing.assert_array_equal(nearest[24 - context : 32 - context], np.arange(8))
    assert nearest[0] == 7  # frame 8 is one turn step past the last context view


def test_view_angle_counts_pitch_and_distance_counts_height():
    level, tilted = camera_pose(0, 1.6, 0, 0, 0.0), camera_pose(0, 1.6, 0, 0, np.radians(40))
    _, angle = view_distance(level, tilted)
    assert angle[0, 0] == pytest.approx(np.radians(40))
    distance, _ = view_distance(camera_pose(0, 1.6, 0, 0, 0), camera_pose(0, 2.6, 0, 0, 0))
    assert distance[0, 0] == pytest.approx(1.0)
    pose = np.concatenate([level.repeat(4, axis=0), tilted.repeat(40, axis=0)])
    pose[4:20, X] = 5.0  # walk away, come back to the same spot looking 40 degrees up: not the same view
    assert not revisit_mask(pose, 4, radius=0.5, angle=30).any()


def test_standing_still_at_the_end_of_the_context_is_not_a_revisit():
    pose = camera_pose(np.zeros(20), 1.6, 0.0, 0.0, 0.0)  # never leaves: the rollout merely continues the context
    assert not revisit_mask(pose, 10, radius=1.0, angle=30).any()
    turning = camera_pose(0.0, 1.6, 0.0, np.arange(60) * 2 * np.pi / 24, 0.0)  # a full turn every 24 frames, in place
    mask = revisit_mask(turning, 12, radius=1.0, angle=10)
    assert mask[24 - 12 - 0] and mask.sum() > 0
    assert not mask[0]  # frame 12 looks 180 degrees away from frame 0
    assert mask[12:24].all() and mask[36:].all() and mask.sum() == 24  # one and two turns later
    after_two_turns = revisit_mask(turning, 12, radius=1.0, angle=10, min_gap=25)
    assert not after_two_turns[:36].any() and after_two_turns[36:].all()


def test_unknown_pose_never_revisits_and_bad_shapes_are_named():
    pose = loop_track()
    pose[:, :] = np.nan
    assert not revisit_mask(pose, 10, 1.0, 30).any()
    assert (nearest_context_frames(pose, 10, 1.0, 30) == -1).all()
    with pytest.raises(ValueError, match=r"\(t 5\)"):
        revisit_mask(np.zeros((10, 3)), 5, 1.0, 30)
    with pytest.raises(ValueError, match="context"):
        revisit_mask(np.zeros((10, 5)), 10, 1.0, 30)


def test_jsonable_replaces_non_finite_numbers():
    out = jsonable({"a": np.float64("nan"), "b": [np.int32(3), np.inf], "c": np.array([1.5]), "d": np.bool_(True)})
    assert out == {"a": None, "b": [3, None], "c": [1.5], "d": True}
    json.dumps(out, allow_nan=False)


def test_headline_needs_every_rival_beaten_on_revisits_and_quality_not_worse():
    cfg = EvalConfig(bootstrap=200)
    rng = np.random.default_rng(0)
    revisit = np.zeros((12, 20), bool)
    revisit[:, 10:] = True

    def scored(level: float) -> dict[str, np.ndarray]:
        return {"lpips": level + 0.01 * rng.standard_normal((12, 20)), "revisit": revisit}

    values = {"millivid": scored(0.1), "full_res": scored(0.3), "framepack": scored(0.3), "random_frames": scored(0.3), "context_mean": scored(0.2)}
    distances = {STANDIN: {"millivid": ChunkDistances(np.ones(2), 1.0, 12), "full_res": ChunkDistances(np.ones(2), 2.0, 12)}}
    verdict = headline(values, distances, ["millivid", "full_res", "framepack"], cfg)
    assert verdict["holds"] and set(verdict["against"]) == {"full_res", "framepack", "random_frames", "context_mean"}
    assert verdict["against"]["context_mean"]["revisit_lpips_difference"]["mean"] == pytest.approx(-0.1, abs=0.01)
    assert verdict["quality_vs_full_res"] == {"network": STANDIN, "millivid": 1.0, "full_res": 2.0, "not_worse": True}
    assert verdict["against"]["full_res"]["reach_contrast"] is None  # the values do not say what was within reach
    blur_wins = {**values, "context_mean": scored(0.05)}
    lost = headline(blur_wins, distances, ["millivid", "full_res", "framepack"], cfg)
    assert not lost["holds"] and not lost["against"]["context_mean"]["beats"] and lost["against"]["full_res"]["beats"]
    worse = {STANDIN: {**distances[STANDIN], "millivid": ChunkDistances(np.ones(2), 3.0, 12)}}
    assert not headline(values, worse, ["millivid", "full_res", "framepack"], cfg)["holds"]
    assert headline(values, distances, ["full_res", "framepack"], cfg) is None
