"""The evaluation's tables and their Parquet files.

    rows      one per (method, example, rollout frame): lpips, psnr, ssim, sharpness,
              truth_sharpness (of the ground-truth frame), revisit (frame revisits a context pose),
              revisit_of (the context frame it revisits, -1 when it does not), within_reach (the
              revisited frame was context of a step making this frame; null for other frames and
              for runs that give no visibility, i.e. references)
    latent_memory  one per (candidate, example, revisit frame, level): mse of the candidate's
              level latents against the true ones (millivid.eval.latent_memory), within_reach as
              in rows (null for latent references), derived (the candidate's level latents were
              re-encoded from its finest ones, not denoised)
    features  one per (network, method, example, chunk): the chunk's video features; method
              "ground_truth" holds the real chunks (the Fréchet distances need every example's)
    curves    one per (method, metric, subset, frame): mean, ci_low, ci_high, examples

`frame` counts rollout frames: 0 is the first generated frame, context + frame its index in the
window. Rows, features and latent memory are sorted by their keys, so merged worker outputs are
identical to a single worker's.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from einops import rearrange

from millivid import storage
from millivid.eval.protocol import Example

FRAME_METRICS = ("lpips", "psnr", "ssim", "sharpness")

ROW_SCHEMA = pa.schema(
    [("method", pa.string()), ("example", pa.int32()), ("episode", pa.string()), ("start", pa.int32()), ("frame", pa.int32())]
    + [(name, pa.float64()) for name in (*FRAME_METRICS, "truth_sharpness")]
    + [("revisit", pa.bool_()), ("revisit_of", pa.int32()), ("within_reach", pa.bool_())]
)
LATENT_MEMORY_SCHEMA = pa.schema(
    [("candidate", pa.string()), ("example", pa.int32()), ("level", pa.int32()), ("frame", pa.int32())]
    + [("mse", pa.float64()), ("within_reach", pa.bool_()), ("derived", pa.bool_())]
)
FEATURE_SCHEMA = pa.schema(
    [("network", pa.string()), ("method", pa.string()), ("example", pa.int32()), ("chunk", pa.int32()), ("features", pa.list_(pa.float32()))]
)
CURVE_SCHEMA = pa.schema(
    [("method", pa.string()), ("metric", pa.string()), ("subset", pa.string()), ("frame", pa.int32())]
    + [(name, pa.float64()) for name in ("mean", "ci_low", "ci_high")]
    + [("examples", pa.int32())]
)
ROW_KEYS = ("method", "example", "frame")
FEATURE_KEYS = ("network", "method", "example", "chunk")
LATENT_MEMORY_KEYS = ("candidate", "level", "example", "frame")


def example_rows(method: str, example: Example, metrics: dict[str, np.ndarray], truth_sharpness: np.ndarray, revisit_of: np.ndarray,
                 within: pa.Array | None = None) -> pa.Table:
    """Rows of one method on one example; every array is (rollout frames,), `within` from within_reach."""
    frames = len(revisit_of)
    columns = {
        "method": [method] * frames,
        "example": np.full(frames, example.index, np.int32),
        "episode": [example.episode] * frames,
        "start": np.full(frames, example.start, np.int32),
        "frame": np.arange(frames, dtype=np.int32),
        **{name: metrics[name] for name in FRAME_METRICS},
        "truth_sharpness": truth_sharpness,
        "revisit": revisit_of >= 0,
        "revisit_of": revisit_of.astype(np.int32),
        "within_reach": within if within is not None else pa.nulls(frames, pa.bool_()),
    }
    return pa.table(columns, schema=ROW_SCHEMA)


def within_reach(visible: np.ndarray | None, revisited: np.ndarray) -> pa.Array:
    """visible: (R, C) bool of a method's plan (None: unknown), revisited: (R, C) bool, every context
    frame each rollout frame revisits -> (R,) bool: whether some context frame a revisit frame
    revisits was within reach when it was generated (a view seen several times in the context
    counts once it is seen anywhere); null for frames that revisit nothing."""
    if visible is None:
        return pa.nulls(len(revisited), pa.bool_())
    return pa.array((visible & revisited).any(axis=1), mask=~revisited.any(axis=1))


def latent_memory_rows(candidate: str, example: int, level: int, frames: np.ndarray, mse: np.ndarray, within: pa.Array, derived: bool) -> pa.Table:
    """Rows of one candidate's level on one example; frames, mse, within: (k,) of its revisit frames."""
    count = len(frames)
    columns = {
        "candidate": [candidate] * count,
        "example": np.full(count, example, np.int32),
        "level": np.full(count, level, np.int32),
        "frame": np.asarray(frames, np.int32),
        "mse": np.asarray(mse, np.float64),
        "within_reach": within,
        "derived": np.full(count, derived),
    }
    return pa.table(columns, schema=LATENT_MEMORY_SCHEMA)


def feature_rows(network: str, method: str, example: int, features: np.ndarray) -> pa.Table:
    """features: (chunks d) of one example's chunks."""
    chunks, width = features.shape
    offsets = pa.array(np.arange(chunks + 1, dtype=np.int32) * width)
    columns = {
        "network": [network] * chunks,
        "method": [method] * chunks,
        "example": np.full(chunks, example, np.int32),
        "chunk": np.arange(chunks, dtype=np.int32),
        "features": pa.ListArray.from_arrays(offsets, pa.array(features.astype(np.float32).ravel())),
    }
    return pa.table(columns, schema=FEATURE_SCHEMA)


def concat_sorted(tables: list[pa.Table], schema: pa.Schema, keys: tuple[str, ...]) -> pa.Table:
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.sort_by([(key, "ascending") for key in keys]).combine_chunks()


def where(table: pa.Table, **equal: str | int) -> pa.Table:
    mask = None
    for column, value in equal.items():
        test = pc.equal(table[column], value)
        mask = test if mask is None else pc.and_(mask, test)
    return table.filter(mask)


def metric_matrix(rows: pa.Table, method: str, column: str) -> np.ndarray:
    """(examples frames) values of one method, booleans as 0/1 and nulls as NaN; rows sorted by ROW_KEYS."""
    selected = where(rows, method=method)
    examples = len(pc.unique(selected["example"]))
    values = pc.cast(selected[column], pa.float64()).to_numpy(zero_copy_only=False)
    return rearrange(values, "(n t) -> n t", n=examples)


def feature_array(features: pa.Table, network: str, method: str) -> np.ndarray:
    """(examples chunks d) features; features sorted by FEATURE_KEYS."""
    selected = where(features, network=network, method=method)
    examples = len(pc.unique(selected["example"]))
    if not len(selected):
        return np.zeros((0, 0, 0), np.float32)
    flat = pc.list_flatten(selected["features"]).to_numpy()
    return rearrange(flat, "(n c d) -> n c d", n=examples, c=len(selected) // examples)


def curve_rows(method: str, metric: str, subset: str, frames: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray, examples: np.ndarray) -> pa.Table:
    count = len(frames)
    columns = {
        "method": [method] * count,
        "metric": [metric] * count,
        "subset": [subset] * count,
        "frame": np.asarray(frames, np.int32),
        "mean": np.asarray(mean, np.float64),
        "ci_low": np.asarray(low, np.float64),
        "ci_high": np.asarray(high, np.float64),
        "examples": np.asarray(examples, np.int32),
    }
    return pa.table(columns, schema=CURVE_SCHEMA)


def write_parquet(uri: str, table: pa.Table) -> None:
    with storage.atomic_open(uri) as handle:
        pq.write_table(table, handle, compression="zstd")


def read_parquet(uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """Read a table; a clear error for an unreadable file or one without the expected columns."""
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{uri}: not a readable Parquet table ({err})") from None
    if schema is not None:
        missing = [name for name in schema.names if name not in table.column_names]
        if missing:
            raise ValueError(f"{uri}: missing column(s) {missing}; has {table.column_names}")
        table = table.select(schema.names).cast(schema)
    return table
