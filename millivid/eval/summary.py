"""The comparison's JSON summary: the numbers one reads first.

Per method (references included, flagged): mean LPIPS / PSNR / SSIM / sharpness over the last
quarter and the last half of the rollout, and over revisit frames, each with a bootstrap 95% CI
over examples; sharpness relative to the ground truth (a blurry method scores well below 1); the
rollout frame where its mean LPIPS curve first goes above the random-frames line, and from where
it stays above (None if never); its LPIPS minus context-mean's LPIPS per example (paired; a CI
entirely below 0 is evidence of memory); the video-distribution distances per chunk. For
methods whose rollout says what it could see: their schedule's `reach`, and the revisit frames
split into `revisit_within_reach` (the revisited context frame was context of a step that made
the frame) and `revisit_out_of_reach` (None for references and methods that do not say).
Frame indices count rollout frames: 0 is the first generated frame.

`latent_memory` (millivid.eval.latent_memory): per level and candidate, the mean squared error of
its latents on revisit frames with a bootstrap CI over examples, whether the level is derived; for
methods also within / out of reach, and the paired per-example difference against context_mean
and copy_revisited.

`headline` states the paper's claim as it is tested here: eval.headline_method has lower LPIPS on
revisit frames than every other method, random frames and the context mean (paired per-example
difference, 95% CI entirely below 0), and its video-distribution distance (FVD, else the
stand-in) is not worse than full_res's (pooled over chunks).
Against each rival it also gives the `reach_contrast`: the same paired difference on the revisit
frames the headline method had within reach and on those out of its reach, and the difference of
the two, which separates memory from rollout position (see `reach_contrast`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millivid.diffusion.schedule import Reach
from millivid.eval.config import EvalConfig
from millivid.eval.curves import ChunkDistances
from millivid.eval.fvd import FVD, STANDIN
from millivid.eval.latent_memory import (
    COPY_REVISITED,
    LATENT_REFERENCES,
    candidates,
    derived_levels,
    memory_matrix,
)
from millivid.eval.latent_memory import NOTES as LATENT_NOTES
from millivid.eval.protocol import Example
from millivid.eval.references import CONTEXT_MEAN, NOTES, RANDOM_FRAMES
from millivid.eval.stats import bootstrap_mean
from millivid.eval.tables import FRAME_METRICS, metric_matrix

WINDOWS = {"last_quarter": 4, "last_half": 2}
FULL_RES = "full_res"  # the schedule the headline's quality condition compares with
CONSISTENCY = ("lpips", "psnr", "ssim")
STANDIN_NOTE = "Fréchet distance of fixed-seed random 3-D conv features: ranks methods, NOT comparable to FVD"


def summarize(
    rows: pa.Table,
    distances: dict[str, dict[str, ChunkDistances]],
    methods: Sequence[str],
    references: Sequence[str],
    examples: Sequence[Example],
    cfg: EvalConfig,
    fvd_status: dict[str, Any],
    lpips_backbone: str,
    budget: Any = None,
    *,
    reach: Mapping[str, Reach] | None = None,
    latent_memory: pa.Table | None = None,
) -> dict[str, Any]:
    """`reach`: method -> its schedule's reach, for methods that say; `latent_memory`:
    tables.LATENT_MEMORY_SCHEMA, None when the evaluation had no latents."""
    names = [*methods, *references]
    values = {name: method_values(rows, name) for name in names}
    reach = reach or {}
    per_method = {
        name: {
            "reference": name in references,
            "note": NOTES.get(name),
            "reach": reach[name].describe() if name in reach else None,
            **consistency_summary(values[name], cfg),
            "crosses_random_frames": crossing_summary(values, name),
            "vs_context_mean": paired_summary(values, name, cfg),
            "quality": {network: quality_entry(by_method[name]) for network, by_method in distances.items()},
        }
        for name in names
    }
    summary = {
        "protocol": {
            **cfg.model_dump(mode="json"),
            "examples_drawn": len(examples),
            "windows": [example.to_json() for example in examples],
        },
        "lpips_backbone": lpips_backbone,
        "methods": list(methods),
        "references": list(references),
        "fvd": {**fvd_status, "metric": FVD},
        "fvd_standin": {"metric": STANDIN, "note": STANDIN_NOTE},
        "per_method": per_method,
        "headline": headline(values, distances, methods, cfg),
        "latent_memory": latent_memory_summary(latent_memory, methods, evaluated_examples(rows), cfg),
        "budget": budget,
    }
    return jsonable(summary)


def method_values(rows: pa.Table, name: str) -> dict[str, np.ndarray]:
    """(examples frames) matrices of one method: metrics, truth_sharpness, revisit, within_reach (NaN: unknown)."""
    columns = (*FRAME_METRICS, "truth_sharpness", "revisit", "within_reach")
    return {column: metric_matrix(rows, name, column) for column in columns}


def evaluated_examples(rows: pa.Table) -> list[int]:
    """Indices of the evaluated examples, in the order of metric_matrix's rows."""
    return sorted(pc.unique(rows["example"]).to_pylist())


def window_start(frames: int, divisor: int) -> int:
    return frames - max(1, frames // divisor)


def consistency_summary(values: dict[str, np.ndarray], cfg: EvalConfig) -> dict[str, Any]:
    frames = values["lpips"].shape[1]
    out: dict[str, Any] = {}
    for window, divisor in WINDOWS.items():
        start = window_start(frames, divisor)
        out[window] = {"frames": [start, frames]}
        for metric in FRAME_METRICS:
            out[window][metric] = interval(values[metric][:, start:].mean(axis=1), cfg)
    revisit = values["revisit"].astype(bool)
    out["revisit"] = frames_summary(values, revisit, cfg)
    # only a rollout that said what it could see has a reach split (references never do)
    known = np.isfinite(values["within_reach"]).any()
    out["revisit_within_reach"] = frames_summary(values, revisit & (values["within_reach"] == 1), cfg) if known else None
    out["revisit_out_of_reach"] = frames_summary(values, revisit & (values["within_reach"] == 0), cfg) if known else None
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = values["sharpness"].mean(axis=1) / values["truth_sharpness"].mean(axis=1)
    out["sharpness_vs_truth"] = interval(np.where(np.isfinite(ratio), ratio, np.nan), cfg)
    return out


def frames_summary(values: dict[str, np.ndarray], mask: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """Frame and example counts of the (n t) `mask`, and each consistency metric's mean over it."""
    out: dict[str, Any] = {"frames": int(mask.sum()), "examples": int(mask.any(axis=1).sum())}
    for metric in CONSISTENCY:
        out[metric] = interval(masked_mean(values[metric], mask), cfg)
    return out


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n t) -> (n,) mean over the masked frames of each example, NaN where it has none."""
    count = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def interval(per_example: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    return bootstrap_mean(per_example, cfg.bootstrap, cfg.seed).at(0)


def crossing_summary(values: dict[str, dict[str, np.ndarray]], name: str) -> dict[str, int | None] | None:
    if RANDOM_FRAMES not in values or name == RANDOM_FRAMES:
        return None
    curve = values[name]["lpips"].mean(axis=0)
    return crossing(curve, values[RANDOM_FRAMES]["lpips"].mean(axis=0))


def crossing(curve: np.ndarray, reference: np.ndarray) -> dict[str, int | None]:
    """First frame where `curve` is above `reference`, and first frame from which it stays above."""
    above = np.asarray(curve) > np.asarray(reference)
    stays = np.logical_and.accumulate(above[::-1])[::-1]
    return {"first": int(above.argmax()) if above.any() else None, "sustained": int(stays.argmax()) if stays.any() else None}


def paired_summary(values: dict[str, dict[str, np.ndarray]], name: str, cfg: EvalConfig) -> dict[str, Any] | None:
    """LPIPS of `name` minus context-mean's, per example, over the last half and over revisit frames."""
    if CONTEXT_MEAN not in values or name == CONTEXT_MEAN:
        return None
    return paired_lpips(values[name], values[CONTEXT_MEAN], cfg)


def paired_lpips(ours: dict[str, np.ndarray], bar: dict[str, np.ndarray], cfg: EvalConfig) -> dict[str, Any]:
    start = window_start(ours["lpips"].shape[1], WINDOWS["last_half"])
    revisit = ours["revisit"].astype(bool)
    last_half = ours["lpips"][:, start:].mean(axis=1) - bar["lpips"][:, start:].mean(axis=1)
    on_revisits = paired_difference(ours["lpips"], bar["lpips"], revisit)
    return {"last_half_lpips": interval(last_half, cfg), "revisit_lpips": interval(on_revisits, cfg)}


def paired_difference(ours: np.ndarray, bar: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n t) values of two lines on the same frames -> (n,) per-example difference of their masked means."""
    return masked_mean(ours, mask) - masked_mean(bar, mask)


def latent_memory_summary(table: pa.Table | None, methods: Sequence[str], examples: Sequence[int], cfg: EvalConfig) -> dict[str, Any]:
    """Per level, per candidate: latent MSE on revisit frames over examples (see the module docstring)."""
    if table is None:
        return {"available": False, "note": "no latents were given (EvalData.latents): latent memory not measured", "levels": {}}
    names = candidates(table, methods)
    levels = sorted(pc.unique(table["level"]).to_pylist())
    return {
        "available": True,
        "note": None if len(table) else "no revisit frames: latent memory not measured",
        "references": {name: LATENT_NOTES[name] for name in LATENT_REFERENCES},
        "levels": {level: level_memory(table, names, methods, level, examples, cfg) for level in levels},
    }


def level_memory(table: pa.Table, names: Sequence[str], methods: Sequence[str], level: int, examples: Sequence[int], cfg: EvalConfig) -> dict[str, Any]:
    mse = {name: memory_matrix(table, name, level, examples, cfg.rollout) for name in names}
    out = {}
    for name in names:
        known = np.isfinite(mse[name])
        out[name] = {"reference": name not in methods, "derived": level in derived_levels(table, name),
                     "frames": int(known.sum()), "mse": interval(masked_mean(mse[name], known), cfg)}
        if name in methods:
            within = memory_matrix(table, name, level, examples, cfg.rollout, "within_reach")
            out[name]["within_reach"] = interval(masked_mean(mse[name], known & (within == 1)), cfg)
            out[name]["out_of_reach"] = interval(masked_mean(mse[name], known & (within == 0)), cfg)
            out[name].update({f"vs_{bar}": paired_memory(mse, name, bar, cfg) for bar in (CONTEXT_MEAN, COPY_REVISITED)})
    return out


def paired_memory(mse: dict[str, np.ndarray], name: str, bar: str, cfg: EvalConfig) -> dict[str, Any] | None:
    """Latent MSE of `name` minus `bar`'s per example, on the revisit frames both have."""
    if bar not in mse:
        return None
    both = np.isfinite(mse[name]) & np.isfinite(mse[bar])
    return interval(paired_difference(mse[name], mse[bar], both), cfg)


def headline(values: dict[str, dict[str, np.ndarray]], distances: dict[str, dict[str, ChunkDistances]],
             methods: Sequence[str], cfg: EvalConfig) -> dict[str, Any] | None:
    ours = cfg.headline_method
    if ours not in methods:
        return None
    rivals = [name for name in (*methods, RANDOM_FRAMES, CONTEXT_MEAN) if name != ours and name in values]
    against = {}
    for rival in rivals:
        difference = paired_lpips(values[ours], values[rival], cfg)["revisit_lpips"]
        against[rival] = {"revisit_lpips_difference": difference, "beats": bool(difference["ci_high"] is not None and difference["ci_high"] < 0),
                          "reach_contrast": reach_contrast(values[ours], values[rival], cfg)}
    network = FVD if FVD in distances else STANDIN if STANDIN in distances else None
    quality = None
    if network is not None and FULL_RES in methods and ours != FULL_RES:
        mine, theirs = distances[network][ours].pooled, distances[network][FULL_RES].pooled
        quality = {"network": network, ours: mine, FULL_RES: theirs, "not_worse": bool(mine <= theirs)}
    holds = bool(against) and all(entry["beats"] for entry in against.values()) and quality is not None and quality["not_worse"]
    return {"method": ours, "against": against, "quality_vs_full_res": quality, "holds": holds}


def reach_contrast(ours: dict[str, np.ndarray], rival: dict[str, np.ndarray], cfg: EvalConfig) -> dict[str, Any] | None:
    """Our LPIPS minus the rival's on the revisit frames we had within reach, and on those out of our
    reach, paired per example; `difference` is the first minus the second (examples with both).

    Within-reach revisit frames come earlier in a rollout, where every method has drifted less, so
    our within-reach numbers alone mix memory with position. On the same frames position moves both
    methods alike: memory shows as a margin larger within reach (`difference` below 0). None when
    our rollouts do not say what they could see (no `within_reach` values, or none known)."""
    if "within_reach" not in ours:
        return None
    known = ~np.isnan(ours["within_reach"])
    if not known.any():
        return None
    revisit = ours["revisit"].astype(bool) & known
    within = paired_difference(ours["lpips"], rival["lpips"], revisit & (ours["within_reach"] == 1))
    out = paired_difference(ours["lpips"], rival["lpips"], revisit & (ours["within_reach"] == 0))
    return {"within_reach": interval(within, cfg), "out_of_reach": interval(out, cfg), "difference": interval(within - out, cfg)}


def quality_entry(found: ChunkDistances) -> dict[str, Any]:
    return {"per_chunk": found.per_chunk.tolist(), "pooled": found.pooled, "examples": found.examples}


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
