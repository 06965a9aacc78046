"""Context knockout (millivid/eval/knockout.py): the cases it asks about are where the schedule can
see the revisited frame, and the errors move only for a model that uses that frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import rearrange
from toys import CHANNELS, TOKENS

from millivid.diffusion.noise import alpha_sigma
from millivid.diffusion.schedule import build_schedule
from millivid.diffusion.schedule_core import CONTEXT, DENOISED
from millivid.diffusion.schedules import FramePackScheduleConfig, MilliVidScheduleConfig
from millivid.eval.config import EvalConfig
from millivid.eval.knockout import (
    Case,
    KnockoutRow,
    case_errors,
    knockout_cases,
    rows_of,
    summarize_knockout,
)
from millivid.pose import view_distance

CONTEXT_FRAMES, ROLLOUT_FRAMES, TURN = 24, 24, 16  # a full turn every 16 frames
CFG = EvalConfig(context=CONTEXT_FRAMES, rollout=ROLLOUT_FRAMES, revisit_min_gap=8, examples=2)
SCHEDULES = {
    "millivid": build_schedule(MilliVidScheduleConfig(windows=(1, 2, 4), extra_budget=16), TOKENS),
    "framepack": build_schedule(FramePackScheduleConfig(denoised=1, context=(1, 2, 16)), TOKENS),
}


def spin_pose(frames: int = CONTEXT_FRAMES + ROLLOUT_FRAMES) -> np.ndarray:
    """(t 5): a camera turning on the spot, one turn every TURN frames."""
    pose = np.zeros((frames, 5))
    pose[:, 3] = 2 * np.pi * np.arange(frames) / TURN
    return pose


def random_latents(seed: int, frames: int = CONTEXT_FRAMES + ROLLOUT_FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((frames, n, CHANNELS)).astype(np.float32) for n in TOKENS]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_case_asks_a_step_that_sees_the_revisited_frame(name):
    schedule, pose = SCHEDULES[name], spin_pose()
    cases = knockout_cases(schedule, pose, CFG)
    assert cases
    distance, turn = view_distance(pose, pose)
    for case in cases:
        matrix = schedule.steps[case.step]
        used = np.flatnonzero((matrix != 0).any(axis=0))
        assert 0 <= case.start + used[0] and case.start + used[-1] < len(pose)
        assert case.start + case.column == case.rollout_frame >= CONTEXT_FRAMES
        assert matrix[case.level, case.column] == DENOISED and schedule.denoised_level(case.step) == case.level
        assert (matrix[:, case.revisited - case.start] == CONTEXT).any()
        assert case.gap >= CFG.revisit_min_gap
        # the control replaces as many tokens, of a frame that does not show the rollout frame's view
        assert ((matrix[:, case.control - case.start] == CONTEXT) == (matrix[:, case.revisited - case.start] == CONTEXT)).all()
        assert case.control != case.revisited
        assert not (distance[case.rollout_frame, case.control] <= CFG.revisit_radius
                    and turn[case.rollout_frame, case.control] <= np.deg2rad(CFG.revisit_angle))
    # asked at the levels whose steps see a revisit's gap (here: millivid's coarsest, framepack's only level)
    assert {case.level for case in cases} == {level for level, reach in schedule.reach.per_level.items() if reach >= CFG.revisit_min_gap}


def test_no_revisit_no_case():
    pose = np.zeros((CONTEXT_FRAMES + ROLLOUT_FRAMES, 5))
    pose[:, 0] = np.arange(len(pose)) * 2.0  # walking straight on: nothing comes back
    assert knockout_cases(SCHEDULES["millivid"], pose, CFG) == []


class CopyColumn(torch.nn.Module):
    """Predicts the denoised tokens as copies of the same level's tokens at one step column: a model
    with perfect memory of that frame (v from the clean estimate and the noisy input)."""

    def __init__(self, column: int):
        super().__init__()
        self.column = column
        self.unused = torch.nn.Parameter(torch.zeros(()))  # gives the probe a device

    def forward(self, tokens, t):
        alpha, sigma = (rearrange(value, "b -> b 1 1") for value in alpha_sigma(t))
        v = torch.zeros_like(tokens.latent)
        for b in range(len(t)):
            asked = tokens.denoised[b]
            level = tokens.level[b, asked][0]
            source = (tokens.frame[b] == self.column) & (tokens.level[b] == level) & ~asked
            clean = tokens.latent[b, source]  # same token order: row-major within a frame of a level
            noisy = tokens.latent[b, asked]
            eps = (noisy - alpha[b] * clean.repeat(len(noisy) // len(clean), 1)) / sigma[b]
            v[b, asked] = alpha[b] * eps - sigma[b] * clean.repeat(len(noisy) // len(clean), 1)
        return v


class Blind(torch.nn.Module):
    """Ignores its input: every variant scores the same."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens, t):
        return torch.zeros_like(tokens.latent)


def test_a_model_that_copies_the_revisited_frame_loses_it_only_when_knocked_out():
    schedule = SCHEDULES["millivid"]
    cases = [c for c in knockout_cases(schedule, spin_pose(), CFG)
             if schedule.steps[c.step][c.level, c.revisited - c.start] == CONTEXT]
    case = cases[0]
    latents, donor = random_latents(0), random_latents(1)
    for level in latents:
        level[case.rollout_frame] = level[case.revisited]  # the view comes back exactly
    actions = np.zeros(len(latents[0]), dtype=np.int64)
    errors = case_errors(CopyColumn(case.revisited - case.start), schedule, latents, donor, actions, [case], seed=0)
    intact, knocked, control = errors[0]
    assert intact < 1e-8 and control < 1e-8  # the control frame is not the one the model copies
    assert knocked > 0.1


def test_a_blind_model_scores_every_variant_alike_and_noise_depends_on_the_seed_alone():
    schedule = SCHEDULES["framepack"]
    cases = knockout_cases(schedule, spin_pose(), CFG)[:3]
    latents, donor = random_latents(0), random_latents(1)
    actions = np.zeros(len(latents[0]), dtype=np.int64)
    errors = case_errors(Blind(), schedule, latents, donor, actions, cases, seed=3)
    assert np.allclose(errors, errors[:, :1])
    assert np.array_equal(errors, case_errors(Blind(), schedule, latents, donor, actions, cases, seed=3))


def test_summary_averages_cases_per_example_then_examples():
    def row(example: int, level: int, intact: float, knocked: float, control: float) -> KnockoutRow:
        return KnockoutRow(example, Case(30, 10, 9, level, 0, 0, 30), intact, knocked, control)

    rows = [row(0, 2, 1.0, 3.0, 1.0), row(0, 2, 1.0, 5.0, 1.0), row(1, 2, 2.0, 2.0, 3.0), row(1, 0, 1.0, 1.0, 1.0)]
    summary = summarize_knockout(rows, resamples=200, seed=0)
    assert sorted(summary) == [0, 2]
    coarsest = summary[2]
    assert (coarsest["cases"], coarsest["examples"]) == (3, 2)
    assert coarsest["knocked_minus_intact"]["mean"] == pytest.approx((3.0 + 0.0) / 2)  # example 0: (2 + 4) / 2
    assert coarsest["control_minus_intact"]["mean"] == pytest.approx((0.0 + 1.0) / 2)
    assert coarsest["memory_effect"]["mean"] == pytest.approx((3.0 - 1.0) / 2)
    assert coarsest["memory_effect"]["ci_low"] <= coarsest["memory_effect"]["mean"] <= coarsest["memory_effect"]["ci_high"]
    assert Case(30, 10, 9, 2, 0, 0, 30).gap == 20


def test_a_row_writes_the_keys_cases_json_has_always_had():
    row = rows_of(4, [Case(30, 10, 9, 2, 1, 0, 30)], np.array([[1.0, 3.0, 2.0]]))[0]
    assert list(row.to_json().items()) == [("example", 4), ("rollout_frame", 30), ("revisited", 10), ("control", 9), ("gap", 20),
                                           ("level", 2), ("step", 1), ("intact", 1.0), ("knocked", 3.0), ("control_knocked", 2.0)]


def test_probe_command_reports_each_level_and_writes_its_plot(tmp_path, monkeypatch, capsys):
    """`millivid probe` end to end on a saved model and the evaluation's toy data (a DiT with
    random weights: the numbers are not the point, the windows, cases and outputs are)."""
    from eval_toys import TOY_EVAL, write_eval_data

    from millivid.diffusion.checkpoint import RolloutModelInfo, save_rollout_model
    from millivid.diffusion.config import DiTConfig
    from millivid.diffusion.dit import build_dit
    from millivid_cli.main import main

    monkeypatch.setenv("MILLIVID_WORKSPACE", str(tmp_path / "workspace"))
    data = write_eval_data(tmp_path / "data")
    schedule_config = FramePackScheduleConfig(denoised=1, context=(1, 2, 8))  # sees 11 frames back: a turn is 8
    dit = DiTConfig(width=32, depth=1, heads=2)
    model_uri = str(tmp_path / "model.pt")
    save_rollout_model(build_dit(dit, 3, TOKENS), RolloutModelInfo(
        method="framepack", schedule_config=schedule_config, model=dit, tokens_per_level=TOKENS, channels=3,
        autoencoder_uri="unused", latents_uri=data.latents.uri, dataset_uri=data.frames.uri), model_uri)
    overrides = [f"eval.{name}={getattr(TOY_EVAL, name)}" for name in
                 ("examples", "context", "rollout", "bootstrap", "candidates", "min_start_gap", "revisit_radius", "revisit_angle", "revisit_min_gap")]
    out = tmp_path / "probe"
    assert main(["probe", "--config", "smoke", *overrides, "--model", model_uri, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["method"], result["examples"], list(result["levels"])) == ("framepack", TOY_EVAL.examples, ["0"])
    assert result["cases"] == result["levels"]["0"]["cases"] > 0
    assert result["levels"]["0"]["memory_effect"]["mean"] is not None
    assert (out / "knockout.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "cases.json").read_text())) == result["cases"]

    # --out at a file: refused before any work
    (tmp_path / "a-file").write_text("mine")
    assert main(["probe", "--config", "smoke", *overrides, "--model", model_uri, "--out", str(tmp_path / "a-file")]) == 1
    assert "a file is there; --out names a folder" in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "mine"

    # a model whose schedule cannot see the revisits: a clear error naming both numbers, no traceback
    near_sighted = str(tmp_path / "near.pt")
    save_rollout_model(build_dit(dit, 3, TOKENS), RolloutModelInfo(
        method="framepack", schedule_config=FramePackScheduleConfig(denoised=1, context=(1, 1, 2)), model=dit,
        tokens_per_level=TOKENS, channels=3, autoencoder_uri="unused", latents_uri=data.latents.uri, dataset_uri=data.frames.uri),
        near_sighted)
    assert main(["probe", "--config", "smoke", *overrides, "--model", near_sighted]) == 1
    assert "no revisit frame of the 4 windows lies in the sight of a framepack step (reach 4, eval.revisit_min_gap 6)" in capsys.readouterr().err
