"""Evaluate several methods on the same examples, seeds and references: one comparison.

    examples = draw_examples(data.frames, cfg)
    result = evaluate_methods(examples, {"millivid": a, "full_res": b}, standard_references(data, cfg, decode), data, cfg)
    result.write("runs/eval-1")      # rows/curves Parquet, summary.json, plots, videos, strips

Fan-out over workers: each evaluates a subset of example indices, and merging the parts gives
exactly one worker's numbers, because every per-example computation (metrics, features) sees
that example alone and the merged tables are sorted:

    parts = [evaluate_subset(examples, part, methods, references, data, cfg) for part in ([0, 2], [1, 3])]
    result = finish(merge_subsets(parts), examples, list(methods), list(references), cfg)

A rollout function gets a RolloutBatch (protocol.py) of up to eval.rollout_batch examples and
returns (b R h w 3) frames, uint8 or float in [0, 1], or a Generated holding them with, optionally,
its latents (per-level latent memory, latent_memory.py) and what context it could see (the rows'
`within_reach`). With EvalData.latents the latent references are scored on every example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from einops import rearrange

from millivid import storage
from millivid.diffusion.schedule import Reach
from millivid.eval.config import GROUND_TRUTH, EvalConfig
from millivid.eval.consistency import frame_metrics, sharpness, unit_frames
from millivid.eval.curves import frame_curves, quality_curves, quality_distances
from millivid.eval.fvd import QualityNetworks, chunk_frames, quality_networks
from millivid.eval.latent_memory import LATENT_REFERENCES, candidate_rows, reference_latents
from millivid.eval.plots import consistency_png, latent_memory_png, quality_png
from millivid.eval.protocol import (
    EvalData,
    Example,
    Generated,
    RolloutFn,
    Window,
    as_generated,
    load_window,
    rollout_batch,
    window_revisits,
)
from millivid.eval.references import RandomFrames
from millivid.eval.showcase import showcase_strip, showcase_video
from millivid.eval.summary import summarize
from millivid.eval.tables import (
    FEATURE_KEYS,
    FEATURE_SCHEMA,
    LATENT_MEMORY_KEYS,
    LATENT_MEMORY_SCHEMA,
    ROW_KEYS,
    ROW_SCHEMA,
    concat_sorted,
    example_rows,
    feature_rows,
    within_reach,
    write_parquet,
)
from millivid.images import to_uint8
from millivid.perceptual import Lpips
from millivid.video import write_video

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class SubsetResult:
    """What a worker returns for its examples; merge_subsets joins several."""

    rows: pa.Table  # tables.ROW_SCHEMA
    features: pa.Table  # tables.FEATURE_SCHEMA
    showcase: dict[int, dict[str, np.ndarray]]  # example -> GROUND_TRUTH / method -> (t h w 3) uint8
    fvd_status: dict[str, Any]
    lpips_backbone: str
    latent_memory: pa.Table | None = None  # tables.LATENT_MEMORY_SCHEMA; None without EvalData.latents
    reach: dict[str, Reach] = field(default_factory=dict)  # method -> its schedule's reach, where it says


@dataclass
class EvaluationResult:
    rows: pa.Table
    curves: pa.Table  # tables.CURVE_SCHEMA
    summary: dict[str, Any]
    pictures: dict[str, bytes]  # relative file name -> PNG bytes
    videos: dict[str, np.ndarray] = field(default_factory=dict)  # relative file name -> (t H W 3) uint8
    fps: int = 8
    latent_memory: pa.Table | None = None  # tables.LATENT_MEMORY_SCHEMA; None without EvalData.latents

    def write(self, uri: str) -> dict[str, str]:
        """Write every output under `uri` (each file atomically); returns name -> URI."""
        tables = {"rows": self.rows, "curves": self.curves, "latent_memory": self.latent_memory}
        written = {}
        for name, table in tables.items():
            if table is not None:
                written[name] = storage.join(uri, f"{name}.parquet")
                write_parquet(written[name], table)
        for name, picture in self.pictures.items():
            written[name] = storage.join(uri, name)
            storage.write_bytes(written[name], picture)
        for name, frames in self.videos.items():
            written[name] = storage.join(uri, name)
            write_video(written[name], frames, fps=self.fps)
        written["summary"] = storage.join(uri, "summary.json")
        storage.write_json(written["summary"], self.summary)
        return written


def build_lpips(cfg: EvalConfig) -> Lpips:
    return Lpips("alex", backbone=cfg.lpips_backbone, weights_path=cfg.lpips_weights_path)


def evaluate_methods(
    examples: Sequence[Example],
    methods: Mapping[str, RolloutFn],
    references: Mapping[str, RolloutFn],
    data: EvalData,
    cfg: EvalConfig,
    *,
    lpips: Lpips | None = None,
    quality: QualityNetworks | None = None,
    budget: Any = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Every method and reference on every example; `budget` (any JSON) is copied into the summary."""
    subset = evaluate_subset(examples, range(len(examples)), methods, references, data, cfg, lpips=lpips, quality=quality, progress=progress)
    return finish(subset, examples, list(methods), list(references), cfg, budget)


def evaluate_subset(
    examples: Sequence[Example],
    indices: Iterable[int],
    methods: Mapping[str, RolloutFn],
    references: Mapping[str, RolloutFn],
    data: EvalData,
    cfg: EvalConfig,
    *,
    lpips: Lpips | None = None,
    quality: QualityNetworks | None = None,
    progress: Progress | None = None,
) -> SubsetResult:
    """Evaluate the examples at `indices` (positions in `examples`)."""
    runs = named_runs(methods, references)
    lpips = lpips if lpips is not None else build_lpips(cfg)
    quality = quality if quality is not None else quality_networks(cfg)
    chosen = [examples[i] for i in sorted(set(indices))]
    collected = Collected(lpips, quality, cfg, RandomFrames(data, cfg) if data.latents is not None else None)
    done, total = 0, len(chosen) * len(runs)
    for start in range(0, len(chosen), cfg.rollout_batch):
        group = chosen[start : start + cfg.rollout_batch]
        windows = [load_window(data, example, cfg) for example in group]
        batch = rollout_batch(group, windows, cfg)
        truths = [collected.add_truth(example, window) for example, window in zip(group, windows, strict=True)]
        for name, run in runs.items():
            output = as_generated(run(batch))
            check_output(name, output, windows[0], cfg)
            if output.reach is not None:
                collected.reach[name] = output.reach
            for row, (example, truth) in enumerate(zip(group, truths, strict=True)):
                collected.add_output(name, output, row, example, truth)
            done += len(group)
            log.info("evaluation: %s on %d/%d examples", name, start + len(group), len(chosen))
            if progress is not None:
                progress(done, total)
    return collected.result()


@dataclass(frozen=True)
class GroundTruth:
    """What every method of an example is compared with, computed once."""

    frames: torch.Tensor  # (R 3 h w) in [0, 1]
    sharpness: np.ndarray  # (R,)
    revisit_of: np.ndarray  # (R,) int: the context frame each rollout frame revisits, or -1
    revisited: np.ndarray  # (R, C) bool: every context frame each rollout frame revisits
    latents: tuple[np.ndarray, ...] | None = None  # per level (R n_l c) true latents of the rollout frames
    latent_references: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)  # latent_memory.reference_latents

    @classmethod
    def of(cls, example: Example, window: Window, cfg: EvalConfig, donors: RandomFrames | None = None) -> GroundTruth:
        """`donors` (with EvalData.latents) gives the random_frames latent reference its donor episode."""
        frames = unit_frames(window.frames[cfg.context :], f"ground truth of example {example.index}")
        revisit_of, revisited = window_revisits(window.pose, cfg)
        truth = cls(frames, sharpness(frames).double().numpy(), revisit_of, revisited)
        if window.latents is None or donors is None:
            return truth
        latents = tuple(level[cfg.context :] for level in window.latents)
        references = reference_latents(window.latents, donors.donor_latents(example), revisit_of, cfg.context)
        return replace(truth, latents=latents, latent_references=references)


class Collected:
    """A worker's tables, filled example by example: rows, features, latent memory, showcase frames."""

    def __init__(self, lpips: Lpips, quality: QualityNetworks, cfg: EvalConfig, donors: RandomFrames | None):
        self.lpips, self.quality, self.cfg, self.donors = lpips, quality, cfg, donors
        self.rows: list[pa.Table] = []
        self.features: list[pa.Table] = []
        self.memory: list[pa.Table] = []
        self.showcase: dict[int, dict[str, np.ndarray]] = {}
        self.reach: dict[str, Reach] = {}

    def add_truth(self, example: Example, window: Window) -> GroundTruth:
        """The example's ground truth: its features, showcase frames and latent references' rows."""
        cfg = self.cfg
        truth = GroundTruth.of(example, window, cfg, self.donors)
        self.features += example_features(self.quality, GROUND_TRUTH, example.index, truth.frames, cfg)
        if example.index < cfg.videos:
            self.showcase[example.index] = {GROUND_TRUTH: window.frames[max(0, cfg.context - cfg.video_context) :]}
        unknown = within_reach(None, truth.revisited)  # references see no steps
        for name, latents in truth.latent_references.items():
            self.memory.append(candidate_rows(name, example.index, latents, truth.latents, truth.revisit_of, unknown))
        return truth

    def add_output(self, name: str, output: Generated, row: int, example: Example, truth: GroundTruth) -> None:
        """Score batch row `row` of a run's output against its example's ground truth."""
        images = unit_frames(output.frames[row], f"{name}: example {example.index}")
        metrics = frame_metrics(images, truth.frames, self.lpips, self.cfg.psnr_cap)
        within = within_reach(output.visible, truth.revisited)
        self.rows.append(example_rows(name, example, metrics, truth.sharpness, truth.revisit_of, within))
        self.features += example_features(self.quality, name, example.index, images, self.cfg)
        if output.latents is not None and truth.latents is not None:
            latents = [level[row] for level in output.latents]
            self.memory.append(candidate_rows(name, example.index, latents, truth.latents, truth.revisit_of, within, output.derived))
        if example.index in self.showcase:
            self.showcase[example.index][name] = to_uint8(rearrange(images, "t c h w -> t h w c").numpy())

    def result(self) -> SubsetResult:
        return SubsetResult(
            rows=concat_sorted(self.rows, ROW_SCHEMA, ROW_KEYS),
            features=concat_sorted(self.features, FEATURE_SCHEMA, FEATURE_KEYS),
            showcase=self.showcase,
            fvd_status=self.quality.fvd_status,
            lpips_backbone=self.lpips.status.tag,
            # donors exist exactly when EvalData.latents was given: without, latent memory is not measured (None)
            latent_memory=concat_sorted(self.memory, LATENT_MEMORY_SCHEMA, LATENT_MEMORY_KEYS) if self.donors is not None else None,
            reach=self.reach,
        )


def named_runs(methods: Mapping[str, RolloutFn], references: Mapping[str, RolloutFn]) -> dict[str, RolloutFn]:
    clash = sorted(set(methods) & set(references) | ({GROUND_TRUTH} & (set(methods) | set(references))))
    if clash:
        raise ValueError(f"method/reference names must be unique and not {GROUND_TRUTH!r}: {clash}")
    taken = sorted(set(methods) & set(LATENT_REFERENCES))  # they would share rows of the latent memory table
    if taken:
        raise ValueError(f"method names must not be latent reference names {LATENT_REFERENCES}: {taken}")
    if not methods and not references:
        raise ValueError("nothing to evaluate: no methods and no references")
    return {**methods, **references}


def check_output(name: str, output: Generated, window: Window, cfg: EvalConfig) -> None:
    """Shapes of a run's output against the batch's windows: frames, latents per level, visibility."""
    batch = len(output.frames)
    expected = (batch, cfg.rollout, *window.frames.shape[1:])
    if tuple(output.frames.shape) != expected:
        raise ValueError(f"{name}: rollout returned shape {tuple(output.frames.shape)}, expected (b R h w 3) = {expected}")
    if output.visible is not None and output.visible.shape != (cfg.rollout, cfg.context):
        raise ValueError(f"{name}: visible has shape {output.visible.shape}, expected (R, C) = {(cfg.rollout, cfg.context)}")
    if output.latents is not None and window.latents is not None:
        got = [tuple(level.shape) for level in output.latents]
        wanted = [(batch, cfg.rollout, *level.shape[1:]) for level in window.latents]
        if got != wanted:
            raise ValueError(f"{name}: latents have shapes {got}, expected per level (b R n_l c) = {wanted}")


def example_features(quality: QualityNetworks, name: str, example: int, frames: torch.Tensor, cfg: EvalConfig) -> list[pa.Table]:
    """One feature table per network for the example's whole chunks (none when R < fvd_chunk)."""
    chunks = chunk_frames(frames, cfg.fvd_chunk)
    if not len(chunks):
        return []
    return [feature_rows(network, name, example, quality.features(network, chunks)) for network in quality.networks]


def merge_subsets(parts: Sequence[SubsetResult]) -> SubsetResult:
    """One SubsetResult from workers' parts (disjoint examples), identical to evaluating them at once."""
    if not parts:
        raise ValueError("merge_subsets needs at least one part")
    examples = [index for part in parts for index in pc.unique(part.rows["example"]).to_pylist()]
    if len(examples) != len(set(examples)):
        raise ValueError(f"parts overlap: example(s) {sorted({i for i in examples if examples.count(i) > 1})} evaluated more than once")
    showcase = {index: frames for part in parts for index, frames in part.showcase.items()}
    memory = [part.latent_memory for part in parts if part.latent_memory is not None]
    return SubsetResult(
        rows=concat_sorted([part.rows for part in parts], ROW_SCHEMA, ROW_KEYS),
        features=concat_sorted([part.features for part in parts], FEATURE_SCHEMA, FEATURE_KEYS),
        showcase=dict(sorted(showcase.items())),
        fvd_status=parts[0].fvd_status,
        lpips_backbone=parts[0].lpips_backbone,
        latent_memory=concat_sorted(memory, LATENT_MEMORY_SCHEMA, LATENT_MEMORY_KEYS) if memory else None,
        reach={name: reach for part in parts for name, reach in part.reach.items()},
    )


def finish(subset: SubsetResult, examples: Sequence[Example], methods: Sequence[str], references: Sequence[str], cfg: EvalConfig, budget: Any = None) -> EvaluationResult:
    """Curves, distances, summary, plots, videos from every example's rows and features."""
    names = [*methods, *references]
    distances = quality_distances(subset.features, names)
    curves = pa.concat_tables([frame_curves(subset.rows, names, cfg), quality_curves(distances, cfg)])
    summary = summarize(subset.rows, distances, methods, references, examples, cfg, subset.fvd_status, subset.lpips_backbone, budget,
                        reach=subset.reach, latent_memory=subset.latent_memory)
    pictures = {
        "plots/consistency.png": consistency_png(curves, methods, references),
        "plots/quality.png": quality_png(curves, methods, references, list(distances)),
    }
    if summary["latent_memory"]["levels"]:
        pictures["plots/latent_memory.png"] = latent_memory_png(summary["latent_memory"], methods)
    videos = {}
    for index, frames in subset.showcase.items():
        pictures[f"strips/example-{index:04d}.png"] = showcase_strip(frames, names)
        videos[f"videos/example-{index:04d}.mp4"] = showcase_video(frames, names)
    return EvaluationResult(subset.rows, curves, summary, pictures, videos, cfg.fps, subset.latent_memory)
