"""Context knockout: does a trained rollout model use the context frame that a revisit shows again?

The rollout evaluation asks whether a method's revisit frames look like what the context showed;
when they do not, it cannot say whether the model never looks that far back or looks and is
spoiled by its own drift. This probe takes the drift away (teacher forcing: every token is a true
latent, no rollout) and asks the model directly.

For a revisit (rollout frame r of an evaluation window, revisited context frame s: the closest view
`window_revisits` finds) and each level the schedule denoises, take a step that denoises that
level of frame r while frame s is in its context: the step placed (`place`) so that one of its
DENOISED columns falls on r. The model's v-prediction error on frame r's denoised tokens, at
fixed noise times and noise, is measured three ways:

    intact     every token is the true latent
    knocked    frame s's latents (every level; kernel tokens follow the finest) replaced by the
               same frame of another evaluation window
    control    the same done to another context frame of the step, one that does not show r's
               view, with the same levels in the step as s (as many tokens replaced), nearest to s

A model that remembers the revisited view predicts frame r worse without it: `knocked - intact`
above `control - intact` (the cost of losing any context frame). Paired per case, means with
percentile-bootstrap intervals over examples (`millivid.eval.stats`).

    cases = knockout_cases(schedule, window.pose, cfg)            # where the probe can ask
    errors = case_errors(model, schedule, window.latents, donor.latents, window.actions, cases, seed=0)   # (cases 3)
    summary = summarize_knockout(rows_of(0, cases, errors), resamples=1000, seed=0)   # per level

No paper section: a diagnostic of this project (issue 13, "find out why").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, repeat

from millivid.diffusion.schedule import Schedule
from millivid.diffusion.schedule_core import CONTEXT, DENOISED, UNSEEN
from millivid.diffusion.task import token_error
from millivid.diffusion.tokens import StepTokens, concat, gather, step_layout
from millivid.eval.config import EvalConfig
from millivid.eval.protocol import window_revisits
from millivid.eval.stats import bootstrap_mean
from millivid.pose import view_distance

VARIANTS = ("intact", "knocked", "control")
NOISE_TIMES = (0.25, 0.5, 0.75)  # diffusion times t in (0, 1) the error is averaged over


@dataclass(frozen=True)
class Case:
    """One question to the model: frame `rollout_frame` at `level`, with and without `revisited`.

    Frames are indices into the evaluation window (context frames first); `start` is the window
    frame of the step's column 0, `column` the step column of the rollout frame.
    """

    rollout_frame: int
    revisited: int
    control: int
    level: int
    step: int
    start: int
    column: int

    @property
    def gap(self) -> int:
        return self.rollout_frame - self.revisited


def place(schedule: Schedule, step: int, frame: int, seen: int, length: int) -> tuple[int, int] | None:
    """(start, column) placing `step` so that a DENOISED column of it is window frame `frame` and
    window frame `seen` is a CONTEXT column at some level, every column the step has tokens of
    inside a window of `length` frames; None if no placement does. The first such column (oldest)
    is taken."""
    matrix = schedule.steps[step]
    used = np.flatnonzero((matrix != UNSEEN).any(axis=0))  # columns the step has tokens of
    for column in np.flatnonzero((matrix == DENOISED).any(axis=0)):
        start = frame - int(column)
        if start + used[0] < 0 or start + used[-1] >= length or not 0 <= seen - start < schedule.span:
            continue
        if (matrix[:, seen - start] == CONTEXT).any():
            return start, int(column)
    return None


def control_frame(matrix: np.ndarray, start: int, seen: int, unlike: np.ndarray) -> int | None:
    """The window frame of the CONTEXT column nearest `seen`'s with the same levels in the step,
    among the frames `unlike` (window-frame bool mask) allows; None if there is none."""
    pattern = matrix[:, seen - start] == CONTEXT
    columns = [c for c in range(matrix.shape[1]) if c != seen - start and (matrix[:, c] == CONTEXT).tolist() == pattern.tolist()
               and unlike[start + c]]
    if not columns:
        return None
    return start + min(columns, key=lambda c: (abs(c - (seen - start)), c))


def knockout_cases(schedule: Schedule, pose: np.ndarray, cfg: EvalConfig) -> list[Case]:
    """Every (revisit frame, denoised level) of a window that some step can be asked about.

    pose: (C+R 5) the window's camera poses (C = cfg.context). A control frame must not show the
    rollout frame's view (camera within cfg.revisit_radius and view within cfg.revisit_angle).
    """
    revisited, _ = window_revisits(pose, cfg)  # (R,) context frame or -1
    distance, turn = view_distance(pose, pose)
    with np.errstate(invalid="ignore"):
        near = (distance <= cfg.revisit_radius) & (turn <= np.deg2rad(cfg.revisit_angle))
    levels = sorted({schedule.denoised_level(i) for i in range(len(schedule.steps))})
    cases = []
    for offset in np.flatnonzero(revisited >= 0):
        frame, seen = cfg.context + int(offset), int(revisited[offset])
        for level in levels:
            for step in (i for i in range(len(schedule.steps)) if schedule.denoised_level(i) == level):
                placed = place(schedule, step, frame, seen, len(pose))
                if placed is None:
                    continue
                start, column = placed
                control = control_frame(schedule.steps[step], start, seen, ~near[frame])
                if control is not None:
                    cases.append(Case(frame, seen, control, level, step, start, column))
                break
    return cases


def case_errors(
    model: torch.nn.Module,
    schedule: Schedule,
    latents: Sequence[np.ndarray],
    donor: Sequence[np.ndarray],
    actions: np.ndarray,
    cases: Sequence[Case],
    seed: int,
) -> np.ndarray:
    """(cases, 3) v-MSE on each case's rollout-frame denoised tokens: intact, knocked, control.

    latents / donor: per level (T n_l c) the window's true latents and another window's (the
    replacement frames); actions: (T,) ints. Each case uses NOISE_TIMES and noise drawn from
    (seed, case index) alone; the error is the mean over those times, tokens and channels (fp32).
    """
    device = next(model.parameters()).device
    out = np.zeros((len(cases), len(VARIANTS)))
    truth = [torch.as_tensor(np.asarray(level), dtype=torch.float32) for level in latents]
    other = [torch.as_tensor(np.asarray(level), dtype=torch.float32) for level in donor]
    moves = rearrange(torch.as_tensor(np.asarray(actions), dtype=torch.long), "t -> 1 t")
    times = torch.tensor(NOISE_TIMES, device=device)
    for index, case in enumerate(cases):
        layout = step_layout(schedule.steps[case.step], schedule.tokens_per_level, schedule.context_source)
        frames = np.arange(case.start, case.start + schedule.span)
        buffers = [truth, replaced(truth, other, case.revisited), replaced(truth, other, case.control)]
        tokens = [gather([rearrange(level, "t n c -> 1 t n c") for level in buffer], moves, frames, layout) for buffer in buffers]
        asked = torch.as_tensor((layout.column == case.column) & layout.denoised, device=device)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        eps = torch.randn(tokens[0].latent.shape[1:], generator=generator).to(device)
        for variant, step_tokens in enumerate(tokens):
            out[index, variant] = asked_error(model, step_tokens.to(device), times, eps, asked)
    return out


def replaced(truth: Sequence[torch.Tensor], other: Sequence[torch.Tensor], frame: int) -> list[torch.Tensor]:
    """The per-level buffers with `frame` taken from `other`."""
    result = [level.clone() for level in truth]
    for level, source in zip(result, other, strict=True):
        level[frame] = source[frame]
    return result


@torch.no_grad()
def asked_error(model: torch.nn.Module, tokens: StepTokens, times: torch.Tensor, eps: torch.Tensor, asked: torch.Tensor) -> float:
    """Mean over `times` (k,) of the v-MSE on the `asked` tokens (n,) bool of one step's tokens (1 n c); eps: (n c)."""
    k = len(times)
    kept = torch.zeros(k, dtype=torch.bool, device=times.device)  # the actions stay
    error = token_error(model, concat([tokens] * k), times, repeat(eps, "n c -> k n c", k=k), kept)  # (k n)
    return float(error[:, asked].mean())


@dataclass(frozen=True)
class KnockoutRow:
    """One case's errors, as the rows of the probe's table."""

    example: int
    case: Case
    intact: float
    knocked: float
    control_knocked: float

    def to_json(self) -> dict:
        """A row of cases.json: example, the case's frames, gap, level and step, then the three errors."""
        case = self.case
        return {"example": self.example, "rollout_frame": case.rollout_frame, "revisited": case.revisited, "control": case.control,
                "gap": case.gap, "level": case.level, "step": case.step,
                "intact": self.intact, "knocked": self.knocked, "control_knocked": self.control_knocked}


def rows_of(example: int, cases: Sequence[Case], errors: np.ndarray) -> list[KnockoutRow]:
    """A row per case of window `example`; errors: (cases 3) from `case_errors`."""
    return [KnockoutRow(example, case, *map(float, error)) for case, error in zip(cases, errors, strict=True)]


def summarize_knockout(rows: Sequence[KnockoutRow], resamples: int, seed: int) -> dict[int, dict]:
    """Per level: cases, examples, and the mean error of each variant and of the two effects
    (knocked - intact, control - intact) and their difference (memory: knocked - control), each
    with a 95% bootstrap interval over examples (an example's cases averaged first)."""
    summary = {}
    for level in sorted({row.case.level for row in rows}):
        chosen = [row for row in rows if row.case.level == level]
        examples = sorted({row.example for row in chosen})
        columns = np.array([[row.intact, row.knocked, row.control_knocked] for row in chosen])  # (cases 3)
        per_example = np.stack([columns[[row.example == e for row in chosen]].mean(axis=0) for e in examples])
        intact, knocked, control = per_example.T
        values = np.stack([intact, knocked, control, knocked - intact, control - intact, knocked - control], axis=1)
        interval = bootstrap_mean(values, resamples=resamples, seed=seed)
        names = ("intact", "knocked", "control", "knocked_minus_intact", "control_minus_intact", "memory_effect")
        summary[level] = {"cases": len(chosen), "examples": len(examples),
                          **{name: interval.at(column) for column, name in enumerate(names)}}
    return summary
