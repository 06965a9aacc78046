"""Curves against rollout length from one evaluation's tables, ready to chart.

    tables = EvaluationTables.read(evaluation)
    frame_curves(tables, "lpips", "revisit_out_of_reach")   # list[Curve], one per method / reference
    quality_curves(tables)                                   # {"sharpness": [...], "<network>": [...]}
    latent_memory_curves(tables, level=2)                    # one per candidate, revisit frames only

The evaluation stores curves over all frames and over revisit frames (curves.parquet). The split of
revisit frames into within and out of a method's reach exists per row (rows.parquet), so those
curves are computed here, with the same bootstrap over examples (resamples and seed from the
evaluation's protocol); so are the per-level latent memory curves (latent_memory.parquet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millivid.eval.config import GROUND_TRUTH
from millivid.eval.latent_memory import candidates, memory_matrix
from millivid.eval.stats import bootstrap_mean
from millivid.eval.tables import FRAME_METRICS, metric_matrix, read_parquet, where
from millivid_dashboards.collect import Evaluation

# subset -> (title, which rows' within_reach value it keeps; None: every revisit frame)
SUBSETS: dict[str, tuple[str, int | None]] = {
    "all": ("all frames", None),
    "revisit": ("revisit frames", None),
    "revisit_within_reach": ("revisit frames within the method's reach", 1),
    "revisit_out_of_reach": ("revisit frames out of the method's reach", 0),
}


@dataclass(frozen=True)
class Curve:
    name: str  # method, reference line or latent-memory candidate
    reference: bool
    frames: np.ndarray  # (k,) rollout frame of each point
    mean: np.ndarray  # (k,) NaN where no example has a value
    low: np.ndarray  # (k,) 95% interval; NaN where none (e.g. one distance per chunk)
    high: np.ndarray
    examples: np.ndarray  # (k,) examples behind each point


@dataclass(frozen=True)
class EvaluationTables:
    summary: dict[str, Any]
    rows: pa.Table
    curves: pa.Table
    latent_memory: pa.Table | None

    @classmethod
    def read(cls, evaluation: Evaluation) -> EvaluationTables:
        memory = evaluation.file("latent_memory.parquet")
        return cls(evaluation.summary, read_parquet(str(evaluation.folder / "rows.parquet")),
                   read_parquet(str(evaluation.folder / "curves.parquet")),
                   read_parquet(str(memory)) if memory else None)

    @property
    def methods(self) -> list[str]:
        return list(self.summary["methods"])

    @property
    def references(self) -> list[str]:
        return list(self.summary["references"])

    @property
    def examples(self) -> list[int]:
        return sorted(pc.unique(self.rows["example"]).to_pylist())

    def bootstrap(self, values: np.ndarray):
        protocol = self.summary["protocol"]
        return bootstrap_mean(values, protocol["bootstrap"], protocol["seed"])


def frame_curves(tables: EvaluationTables, metric: str, subset: str) -> list[Curve]:
    """Every method and reference for `all` and `revisit`; methods only within / out of reach
    (reference lines run no steps, so nothing is within their reach)."""
    if SUBSETS[subset][1] is None:
        names = [*tables.methods, *tables.references]
        return [stored_curve(tables, name, metric, subset) for name in names]
    return [curve for name in tables.methods if (curve := reach_curve(tables, name, metric, subset)) is not None]


def stored_curve(tables: EvaluationTables, name: str, metric: str, subset: str) -> Curve:
    table = where(tables.curves, method=name, metric=metric, subset=subset).sort_by("frame")
    column = {key: table[key].to_numpy(zero_copy_only=False).astype(np.float64) for key in ("mean", "ci_low", "ci_high")}
    return Curve(name, name not in tables.methods, table["frame"].to_numpy(), column["mean"], column["ci_low"],
                 column["ci_high"], table["examples"].to_numpy())


def reach_curve(tables: EvaluationTables, name: str, metric: str, subset: str) -> Curve | None:
    """Per-frame mean over the examples whose frame is a revisit within (or out of) the method's reach."""
    within = metric_matrix(tables.rows, name, "within_reach")
    if not np.isfinite(within).any():
        return None  # the method's rollout did not say what it could see
    kept = (metric_matrix(tables.rows, name, "revisit") == 1) & (within == SUBSETS[subset][1])
    values = np.where(kept, metric_matrix(tables.rows, name, metric), np.nan)
    return interval_curve(tables, name, False, values)


def interval_curve(tables: EvaluationTables, name: str, reference: bool, values: np.ndarray) -> Curve:
    """(examples frames) values, NaN where missing -> mean and bootstrap interval per frame."""
    interval = tables.bootstrap(values)
    return Curve(name, reference, np.arange(values.shape[1]), interval.mean, interval.low, interval.high, interval.count)


def quality_curves(tables: EvaluationTables) -> dict[str, list[Curve]]:
    """Sharpness per frame (with the ground truth's) and each video-distribution distance per chunk."""
    stored = set(pc.unique(tables.curves["metric"]).to_pylist())
    networks = sorted(stored - set(FRAME_METRICS))
    names = [*tables.methods, *tables.references]
    out = {"sharpness": [stored_curve(tables, name, "sharpness", "all") for name in [*names, GROUND_TRUTH]]}
    out.update({network: [stored_curve(tables, name, network, "all") for name in names] for network in networks})
    return out


def latent_memory_levels(tables: EvaluationTables) -> list[int]:
    if tables.latent_memory is None or not len(tables.latent_memory):
        return []
    return sorted(pc.unique(tables.latent_memory["level"]).to_pylist())


def latent_memory_curves(tables: EvaluationTables, level: int) -> list[Curve]:
    """Latent MSE of each candidate at `level` on revisit frames, per rollout frame."""
    table = tables.latent_memory
    frames = tables.summary["protocol"]["rollout"]
    return [interval_curve(tables, name, name not in tables.methods,
                           memory_matrix(table, name, level, tables.examples, frames))
            for name in candidates(table, tables.methods)]
