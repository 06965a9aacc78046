"""One Parquet shard: rows are frames (episode, frame, one column per named array).

Array columns are stored as raw fixed-size binary (one value's bytes per row, little-endian,
C order) under Parquet compression; scalar columns (actions) as plain Parquet integers or
floats. Raw binary decodes with one memcpy per row group: bench/storage.py compares it with
fixed-size lists and PNG per frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import IO

import numpy as np
import pyarrow as pa
from einops import rearrange

from millivid.data.columns import ColumnSpec, DataError


def arrow_type(spec: ColumnSpec) -> pa.DataType:
    if not spec.shape:
        return pa.from_numpy_dtype(spec.numpy_dtype)
    return pa.binary(spec.frame_bytes)


def shard_schema(columns: Mapping[str, ColumnSpec]) -> pa.Schema:
    fields = [pa.field("episode", pa.string(), nullable=False), pa.field("frame", pa.int32(), nullable=False)]
    fields += [pa.field(name, arrow_type(spec), nullable=False) for name, spec in columns.items()]
    return pa.schema(fields)


def episode_table(episode_id: str, arrays: Mapping[str, np.ndarray], columns: Mapping[str, ColumnSpec], length: int) -> pa.Table:
    data = {
        "episode": pa.array([episode_id] * length, pa.string()),
        "frame": pa.array(np.arange(length, dtype=np.int32)),
    }
    for name, spec in columns.items():
        data[name] = to_arrow(arrays[name], spec)
    return pa.table(data, schema=shard_schema(columns))


def to_arrow(values: np.ndarray, spec: ColumnSpec) -> pa.Array:
    """(t, *shape) array -> arrow array of t rows."""
    values = np.ascontiguousarray(values, dtype=spec.numpy_dtype.newbyteorder("<"))
    if not spec.shape:
        return pa.array(values)
    return pa.FixedSizeBinaryArray.from_buffers(arrow_type(spec), len(values), [None, pa.py_buffer(values)])


def from_arrow(values: pa.Array | pa.ChunkedArray, spec: ColumnSpec) -> np.ndarray:
    """Arrow array of t rows -> read-only (t, *shape) numpy view of its buffer (no copy)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not spec.shape:
        return values.to_numpy(zero_copy_only=False).astype(spec.numpy_dtype, copy=False)
    width = spec.frame_bytes
    flat = np.frombuffer(values.buffers()[1], dtype=np.uint8, count=len(values) * width, offset=values.offset * width)
    return unflatten(flat.view(spec.numpy_dtype.newbyteorder("<")).astype(spec.numpy_dtype, copy=False), spec.shape)


def unflatten(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(t * prod(shape),) -> (t, *shape), for a shape of any rank."""
    axes = " ".join(f"a{i}" for i in range(len(shape)))
    return rearrange(flat, f"(t {axes}) -> t {axes}", **{f"a{i}": side for i, side in enumerate(shape)})


def check_schema(schema: pa.Schema, columns: Mapping[str, ColumnSpec], where: str) -> None:
    expected = shard_schema(columns)
    for field in expected:
        if field.name not in schema.names:
            raise DataError(f"{where}: column '{field.name}' is missing")
        found = schema.field(field.name).type
        if found != field.type:
            raise DataError(f"{where}: column '{field.name}' has type {found}, expected {field.type}")


class HashingWriter:
    """A write-only file wrapper that hashes and counts the bytes passing through."""

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.closed = True  # the caller owns (and closes) the underlying handle

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False
