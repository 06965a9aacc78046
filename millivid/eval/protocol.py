"""The evaluation protocol: which test windows, with which seeds, and what a method is given.

An example is a window of C + R frames of one episode of the evaluation split: C ground-truth
context frames, then R frames a method generates from the context and the ground-truth actions.
Examples are drawn once, deterministically from eval.seed; example i's rollout seed depends only
on (eval.seed, i), so no result depends on how examples are split across workers. Every method
of a comparison gets the same examples and seeds.

    examples = draw_examples(dataset, cfg)                 # select=revisits: most revisit frames first
    windows = [load_window(EvalData(dataset, latents), e, cfg) for e in examples[:4]]
    batch = rollout_batch(examples[:4], windows, cfg)
    generated = as_generated(rollout_fn(batch))            # frames (b R h w 3); latents, visibility if given
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from millivid.data.columns import DataError
from millivid.data.reader import Dataset
from millivid.diffusion.schedule import Reach
from millivid.eval.config import EvalConfig
from millivid.eval.revisits import nearest_context_frames, revisit_pairs
from millivid.pose import POSE_FIELDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    index: int
    episode: str
    start: int  # first context frame in the episode
    seed: int  # rollout seed, from (eval.seed, index) alone
    revisits: int  # rollout frames that revisit a context pose

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalData:
    """Where examples are read: frames, actions and pose; optionally latents of the same episodes."""

    frames: Dataset
    latents: Dataset | None = None  # columns latent_0, latent_1, ... (t n_l c)

    def latent_levels(self) -> int:
        if self.latents is None:
            return 0
        return sum(1 for name in self.latents.columns if name.startswith("latent_"))


@dataclass(frozen=True)
class Window:
    """One example's ground truth: every frame of context and rollout."""

    frames: np.ndarray  # (C+R h w 3) uint8
    actions: np.ndarray  # (C+R,) int64
    pose: np.ndarray  # (C+R 5) float32 camera pose (millivid.pose), NaN where unknown
    latents: tuple[np.ndarray, ...] | None  # per level (C+R n_l c) float32


@dataclass(frozen=True)
class RolloutBatch:
    """What a method is given for b examples."""

    examples: list[Example]
    context_frames: np.ndarray  # (b C h w 3) uint8
    context_latents: tuple[np.ndarray, ...] | None  # per level (b C n_l c) float32, when latents are given
    actions: np.ndarray  # (b C+R) int64: ground-truth actions of the context and the rollout frames
    rollout: int  # R: frames to generate after the context

    @property
    def seeds(self) -> list[int]:
        return [example.seed for example in self.examples]


@dataclass(frozen=True)
class Generated:
    """What a rollout function returns when it has more to say than its frames.

    `latents` and `visible` let the evaluation measure memory per level and split revisit frames
    by whether the revisited context frame was within the method's reach.
    """

    frames: np.ndarray | torch.Tensor  # (b R h w 3) uint8, or float in [0, 1]
    latents: tuple[np.ndarray, ...] | None = None  # per level (b R n_l c) float arrays, NaN where unknown
    visible: np.ndarray | None = None  # (R, C) bool: context frame c was CONTEXT of a step making rollout frame r
    reach: Reach | None = None  # the schedule's reach (millivid.diffusion.schedule_core)
    derived: tuple[int, ...] = ()  # levels whose latents were re-encoded from the finest ones, not denoised


# Returns (b R h w 3) frames (uint8, or float in [0, 1]) or a Generated holding them.
RolloutFn = Callable[[RolloutBatch], np.ndarray | torch.Tensor | Generated]


def as_generated(output: np.ndarray | torch.Tensor | Generated) -> Generated:
    return output if isinstance(output, Generated) else Generated(output)


def example_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def window_pose(dataset: Dataset, episode: str, start: int, span: int) -> np.ndarray:
    """(span 5) camera pose; all NaN where the dataset has no pose."""
    if "pose" not in dataset.columns:
        return np.full((span, len(POSE_FIELDS)), np.nan, dtype=np.float32)
    return dataset.read(episode, start, start + span, ["pose"])["pose"]


def draw_examples(dataset: Dataset, cfg: EvalConfig) -> list[Example]:
    """cfg.examples windows of cfg.split, the same for the same (dataset, cfg).

    Windows are drawn in a seeded random order without replacement; with select=revisits the
    first cfg.candidates are ranked by revisit frames (ties keep draw order) and those with less than
    cfg.min_revisit_share of their rollout frames revisiting are dropped. Windows are taken
    in that order, skipping any that start within cfg.min_start_gap frames of a taken window of
    the same episode (near-copies would make the confidence intervals too narrow).
    """
    span = cfg.context + cfg.rollout
    episodes = [e for e in dataset.episodes(cfg.split) if dataset.length(e) >= span]
    if not episodes:
        raise DataError(f"{dataset.uri}: no {cfg.split} episode has the {span} frames (eval.context + eval.rollout) an example needs")
    if cfg.select == "revisits" and "pose" not in dataset.columns:
        raise DataError(f"{dataset.uri}: eval.select=revisits needs a 'pose' column; set eval.select=random")
    starts = np.array([dataset.length(e) - span + 1 for e in episodes])
    first = np.concatenate([[0], np.cumsum(starts)])
    drawn = np.random.default_rng([cfg.seed, 0x5E1EC7]).permutation(int(first[-1]))
    if cfg.select == "revisits":
        drawn = drawn[: max(cfg.candidates, cfg.examples)]
    owner = np.searchsorted(first, drawn, "right") - 1
    windows: Iterable[tuple[str, int]] = ((episodes[e], int(d - first[e])) for d, e in zip(drawn, owner, strict=True))
    if cfg.select == "revisits":
        candidates = list(windows)
        counts = np.array([revisit_count(dataset, episode, start, cfg) for episode, start in candidates])
        windows = [candidates[i] for i in np.argsort(-counts, kind="stable") if counts[i] >= cfg.min_revisit_share * cfg.rollout]
    chosen = spaced(windows, cfg.min_start_gap, cfg.examples)
    if len(chosen) < cfg.examples:
        log.warning("%s: only %d of %d requested examples (windows of %d frames, %d apart)", dataset.uri, len(chosen), cfg.examples, span, cfg.min_start_gap)
    return [Example(i, e, start, example_seed(cfg.seed, i), revisit_count(dataset, e, start, cfg)) for i, (e, start) in enumerate(chosen)]


def revisit_count(dataset: Dataset, episode: str, start: int, cfg: EvalConfig) -> int:
    return int((revisit_frames(window_pose(dataset, episode, start, cfg.context + cfg.rollout), cfg) >= 0).sum())


def revisit_frames(pose: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """(C+R 5) pose of a window -> (R,) int: the context frame each rollout frame revisits, or -1."""
    return window_revisits(pose, cfg)[0]


def window_revisits(pose: np.ndarray, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(C+R 5) pose of a window -> (R,) int, the context frame each rollout frame revisits (the
    closest view) or -1, and (R, C) bool, every context frame each rollout frame revisits."""
    pairs, score = revisit_pairs(pose, cfg.context, cfg.revisit_radius, cfg.revisit_angle, cfg.revisit_min_gap)
    return np.where(pairs.any(axis=1), score.argmin(axis=1), -1), pairs


def nearest_pose_frames(pose: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """(C+R 5) pose of a window -> (R,) int: the context frame with the closest view, or -1."""
    return nearest_context_frames(pose, cfg.context, cfg.revisit_radius, cfg.revisit_angle)


def spaced(windows: Iterable[tuple[str, int]], gap: int, limit: int) -> list[tuple[str, int]]:
    """The first `limit` windows, in order, none starting within `gap` frames of an earlier one of its episode."""
    taken: dict[str, list[int]] = {}
    chosen = []
    for episode, start in windows:
        if len(chosen) == limit:
            break
        if all(abs(start - other) >= gap for other in taken.get(episode, [])):
            taken.setdefault(episode, []).append(start)
            chosen.append((episode, start))
    return chosen


def load_window(data: EvalData, example: Example, cfg: EvalConfig) -> Window:
    span = cfg.context + cfg.rollout
    missing = [name for name in ("frames", "actions") if name not in data.frames.columns]
    if missing:
        raise DataError(f"{data.frames.uri}: evaluation needs column(s) {missing}")
    arrays = data.frames.read(example.episode, example.start, example.start + span, ["frames", "actions"])
    pose = window_pose(data.frames, example.episode, example.start, span)
    return Window(arrays["frames"], arrays["actions"].astype(np.int64), pose, read_latents(data, example, span))


def read_latents(data: EvalData, example: Example, span: int) -> tuple[np.ndarray, ...] | None:
    levels = data.latent_levels()
    if not levels:
        return None
    names = [f"latent_{level}" for level in range(levels)]
    arrays = data.latents.read(example.episode, example.start, example.start + span, names)
    return tuple(arrays[name].astype(np.float32) for name in names)


def rollout_batch(examples: list[Example], windows: list[Window], cfg: EvalConfig) -> RolloutBatch:
    context = cfg.context
    latents = None
    if windows[0].latents is not None:
        latents = tuple(np.stack([w.latents[level][:context] for w in windows]) for level in range(len(windows[0].latents)))
    return RolloutBatch(
        examples=examples,
        context_frames=np.stack([w.frames[:context] for w in windows]),
        context_latents=latents,
        actions=np.stack([w.actions for w in windows]),
        rollout=cfg.rollout,
    )
