"""Aggregate per-example results into curves against rollout length.

    frame_curves(rows, names, cfg)          # mean and bootstrap CI per method, metric and rollout frame,
                                            # over all frames ("all") and over revisit frames ("revisit"),
                                            # plus the ground truth's sharpness (method "ground_truth")
    distances = quality_distances(features, names)   # Fréchet distance per network, method and chunk
    quality_curves(distances, cfg)          # the same distances as curve rows (no CI: one value per chunk)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from einops import rearrange

from millivid.eval.config import GROUND_TRUTH, EvalConfig
from millivid.eval.fvd import frechet_distance
from millivid.eval.stats import bootstrap_mean
from millivid.eval.tables import (
    CURVE_SCHEMA,
    FRAME_METRICS,
    curve_rows,
    feature_array,
    metric_matrix,
)


def frame_curves(rows: pa.Table, names: list[str], cfg: EvalConfig) -> pa.Table:
    parts = []
    for name in names:
        revisit = metric_matrix(rows, name, "revisit").astype(bool)
        frames = np.arange(revisit.shape[1])
        for metric in FRAME_METRICS:
            values = metric_matrix(rows, name, metric)
            for subset, kept in (("all", values), ("revisit", np.where(revisit, values, np.nan))):
                curve = bootstrap_mean(kept, cfg.bootstrap, cfg.seed)
                parts.append(curve_rows(name, metric, subset, frames, curve.mean, curve.low, curve.high, curve.count))
    if names:
        truth = bootstrap_mean(metric_matrix(rows, names[0], "truth_sharpness"), cfg.bootstrap, cfg.seed)
        parts.append(curve_rows(GROUND_TRUTH, "sharpness", "all", np.arange(len(truth.mean)), truth.mean, truth.low, truth.high, truth.count))
    return pa.concat_tables(parts) if parts else CURVE_SCHEMA.empty_table()


@dataclass(frozen=True)
class ChunkDistances:
    per_chunk: np.ndarray  # (chunks,) Fréchet distance of chunk index c over examples
    pooled: float  # every chunk of every example in one distribution
    examples: int


def quality_distances(features: pa.Table, names: list[str]) -> dict[str, dict[str, ChunkDistances]]:
    """network -> method -> distances of the method's chunks to the ground truth's chunks."""
    out: dict[str, dict[str, ChunkDistances]] = {}
    for network in pc.unique(features["network"]).to_pylist():
        truth = feature_array(features, network, GROUND_TRUTH)
        out[network] = {name: chunk_distances(feature_array(features, network, name), truth) for name in names}
    return out


def chunk_distances(generated: np.ndarray, truth: np.ndarray) -> ChunkDistances:
    """(examples chunks d) each -> one distance per chunk index and one pooled over chunks."""
    per_chunk = np.array([frechet_distance(generated[:, c], truth[:, c]) for c in range(truth.shape[1])])
    pooled = frechet_distance(rearrange(generated, "n c d -> (n c) d"), rearrange(truth, "n c d -> (n c) d"))
    return ChunkDistances(per_chunk, pooled, len(truth))


def quality_curves(distances: dict[str, dict[str, ChunkDistances]], cfg: EvalConfig) -> pa.Table:
    """Each chunk's distance at the chunk's last rollout frame: 'after f frames, FVD is ...'."""
    parts = []
    for network, by_method in distances.items():
        for name, found in by_method.items():
            frames = (np.arange(len(found.per_chunk)) + 1) * cfg.fvd_chunk - 1
            missing = np.full(len(frames), np.nan)
            parts.append(curve_rows(name, network, "all", frames, found.per_chunk, missing, missing, np.full(len(frames), found.examples)))
    return pa.concat_tables(parts) if parts else CURVE_SCHEMA.empty_table()
