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
returns (b R h w 3) frames, uint8 or float in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from einops import rearrange

from millivid import storage
from millivid.eval.config import EvalConfig
from millivid.eval.consistency import frame_metrics, sharpness, unit_frames
from millivid.eval.curves import frame_curves, quality_curves, quality_distances
from millivid.eval.fvd import QualityNetworks, chunk_frames, quality_networks
from millivid.eval.plots import consistency_png, quality_png
from millivid.eval.protocol import (
    EvalData,
    Example,
    RolloutFn,
    Window,
    load_window,
    revisit_frames,
    rollout_batch,
)
from millivid.eval.showcase import showcase_strip, showcase_video
from millivid.eval.summary import summarize
from millivid.eval.tables import (
    FEATURE_KEYS,
    FEATURE_SCHEMA,
    GROUND_TRUTH,
    ROW_KEYS,
    ROW_SCHEMA,
    concat_sorted,
    example_rows,
    feature_rows,
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


@dataclass
class EvaluationResult:
    rows: pa.Table
    curves: pa.Table  # tables.CURVE_SCHEMA
    summary: dict[str, Any]
    pictures: dict[str, bytes]  # relative file name -> PNG bytes
    videos: dict[str, np.ndarray] = field(default_factory=dict)  # relative file name -> (t H W 3) uint8
    fps: int = 8

    def write(self, uri: str) -> dict[str, str]:
        """Write every output under `uri` (each file atomically); returns name -> URI."""
        written = {"rows": storage.join(uri, "rows.parquet"), "curves": storage.join(uri, "curves.parquet")}
        write_parquet(written["rows"], self.rows)
        write_parquet(written["curves"], self.curves)
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
    rows, features, showcase = [], [], {}
    done, total = 0, len(chosen) * len(runs)
    for start in range(0, len(chosen), cfg.rollout_batch):
        group = chosen[start : start + cfg.rollout_batch]
        windows = [load_window(data, example, cfg) for example in group]
        batch = rollout_batch(group, windows, cfg)
        truths = [GroundTruth.of(example, window, cfg) for example, window in zip(group, windows, strict=True)]
        for example, window, truth in zip(group, windows, truths, strict=True):
            features += example_features(quality, GROUND_TRUTH, example.index, truth.frames, cfg)
            if example.index < cfg.videos:
                showcase[example.index] = {GROUND_TRUTH: window.frames[max(0, cfg.context - cfg.video_context) :]}
        for name, run in runs.items():
            generated = run(batch)
            check_output(name, generated, len(group), tuple(windows[0].frames.shape[1:]), cfg.rollout)
            for example, truth, frames in zip(group, truths, generated, strict=True):
                images = unit_frames(frames, f"{name}: example {example.index}")
                metrics = frame_metrics(images, truth.frames, lpips, cfg.psnr_cap)
                rows.append(example_rows(name, example, metrics, truth.sharpness, truth.revisit_of))
                features += example_features(quality, name, example.index, images, cfg)
                if example.index in showcase:
                    showcase[example.index][name] = to_uint8(rearrange(images, "t c h w -> t h w c").numpy())
            done += len(group)
            log.info("evaluation: %s on %d/%d examples", name, start + len(group), len(chosen))
            if progress is not None:
                progress(done, total)
    return SubsetResult(
        rows=concat_sorted(rows, ROW_SCHEMA, ROW_KEYS),
        features=concat_sorted(features, FEATURE_SCHEMA, FEATURE_KEYS),
        showcase=showcase,
        fvd_status=quality.fvd_status,
        lpips_backbone=lpips.status.tag,
    )


@dataclass(frozen=True)
class GroundTruth:
    """What every method of an example is compared with, computed once."""

    frames: torch.Tensor  # (R 3 h w) in [0, 1]
    sharpness: np.ndarray  # (R,)
    revisit_of: np.ndarray  # (R,) int: the context frame each rollout frame revisits, or -1

    @classmethod
    def of(cls, example: Example, window: Window, cfg: EvalConfig) -> GroundTruth:
        frames = unit_frames(window.frames[cfg.context :], f"ground truth of example {example.index}")
        return cls(frames, sharpness(frames).double().numpy(), revisit_frames(window.pose, cfg))


def named_runs(methods: Mapping[str, RolloutFn], references: Mapping[str, RolloutFn]) -> dict[str, RolloutFn]:
    clash = sorted(set(methods) & set(references) | ({GROUND_TRUTH} & (set(methods) | set(references))))
    if clash:
        raise ValueError(f"method/reference names must be unique and not {GROUND_TRUTH!r}: {clash}")
    if not methods and not references:
        raise ValueError("nothing to evaluate: no methods and no references")
    return {**methods, **references}


def check_output(name: str, generated: np.ndarray | torch.Tensor, batch: int, frame_shape: tuple[int, ...], rollout: int) -> None:
    expected = (batch, rollout, *frame_shape)
    if tuple(generated.shape) != expected:
        raise ValueError(f"{name}: rollout returned shape {tuple(generated.shape)}, expected (b R h w 3) = {expected}")


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
    return SubsetResult(
        rows=concat_sorted([part.rows for part in parts], ROW_SCHEMA, ROW_KEYS),
        features=concat_sorted([part.features for part in parts], FEATURE_SCHEMA, FEATURE_KEYS),
        showcase=dict(sorted(showcase.items())),
        fvd_status=parts[0].fvd_status,
        lpips_backbone=parts[0].lpips_backbone,
    )


def finish(subset: SubsetResult, examples: Sequence[Example], methods: Sequence[str], references: Sequence[str], cfg: EvalConfig, budget: Any = None) -> EvaluationResult:
    """Curves, distances, summary, plots, videos from every example's rows and features."""
    names = [*methods, *references]
    distances = quality_distances(subset.features, names)
    curves = pa.concat_tables([frame_curves(subset.rows, names, cfg), quality_curves(distances, cfg)])
    summary = summarize(subset.rows, distances, methods, references, examples, cfg, subset.fvd_status, subset.lpips_backbone, budget)
    pictures = {
        "plots/consistency.png": consistency_png(curves, methods, references),
        "plots/quality.png": quality_png(curves, methods, references, list(distances)),
    }
    videos = {}
    for index, frames in subset.showcase.items():
        pictures[f"strips/example-{index:04d}.png"] = showcase_strip(frames, names)
        videos[f"videos/example-{index:04d}.mp4"] = showcase_video(frames, names)
    return EvaluationResult(subset.rows, curves, summary, pictures, videos, cfg.fps)
