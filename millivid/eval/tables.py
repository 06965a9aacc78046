"""The evaluation's tables and their Parquet files.

    rows      one per (method, example, rollout frame): lpips, psnr, ssim, sharpness,
              truth_sharpness (of the ground-truth frame), revisit (frame revisits a context pose),
              revisit_of (the context frame it revisits, -1 when it does not)
    features  one per (network, method, example, chunk): the chunk's video features; method
              "ground_truth" holds the real chunks (the Fréchet distances need every example's)
    curves    one per (method, metric, subset, frame): mean, ci_low, ci_high, examples

`frame` counts rollout frames: 0 is the first generated frame, context + frame its index in the
window. Rows and features are sorted by their keys, so merged worker outputs are identical to a
single worker's.
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
GROUND_TRUTH = "ground_truth"

ROW_SCHEMA = pa.schema(
    [("method", pa.string()), ("example", pa.int32()), ("episode", pa.string()), ("start", pa.int32()), ("frame", pa.int32())]
    + [(name, pa.float64()) for name in (*FRAME_METRICS, "truth_sharpness")]
    + [("revisit", pa.bool_()), ("revisit_of", pa.int32())]
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


def example_rows(method: str, example: Example, metrics: dict[str, np.ndarray], truth_sharpness: np.ndarray, revisit_of: np.ndarray) -> pa.Table:
    """Rows of one method on one example; every array is (rollout frames,)."""
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
    }
    return pa.table(columns, schema=ROW_SCHEMA)


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


def where(table: pa.Table, **equal: str) -> pa.Table:
    mask = None
    for column, value in equal.items():
        test = pc.equal(table[column], value)
        mask = test if mask is None else pc.and_(mask, test)
    return table.filter(mask)


def metric_matrix(rows: pa.Table, method: str, column: str) -> np.ndarray:
    """(examples frames) values of one method; rows sorted by ROW_KEYS."""
    selected = where(rows, method=method)
    examples = len(pc.unique(selected["example"]))
    values = selected[column].to_numpy(zero_copy_only=False)
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
