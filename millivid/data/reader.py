"""Reading a sharded episode dataset on any fsspec URI: clips of named array columns, checked.

    dataset = open_dataset(uri)
    dataset.read("ep-0000", 10, 26, columns=["frames"])["frames"]   # (16 64 64 3) uint8

Reads trust the manifest, and check it: the first time a process opens a shard, its size and
sha256 are compared with the manifest's (`bench storage` measures the cost), so a damaged shard
is an error naming it, never wrong frames. `millivid.data.writer` writes a dataset.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from millivid import storage
from millivid.data.columns import ColumnSpec, DataError, check_actions
from millivid.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    EpisodeEntry,
    Manifest,
    ShardEntry,
    Split,
    parse_manifest,
)
from millivid.data.shards import check_schema, from_arrow

DEFAULT_CACHE_BYTES = 256 << 20


def load_manifest(uri: str) -> Manifest:
    where = storage.join(uri, MANIFEST_NAME)
    if not storage.exists(where):
        raise DataError(f"{uri}: no {MANIFEST_NAME} (not a dataset, or its first write never finished)")
    try:
        raw = storage.read_json(where)
    except ValueError as err:
        raise DataError(str(err)) from None
    return parse_manifest(raw, where)


class RowGroupCache:
    """Decoded (shard, row group, column) arrays, least recently used evicted beyond `capacity` bytes."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self.entries: OrderedDict[tuple[int, int, str], np.ndarray] = OrderedDict()

    def get(self, key: tuple[int, int, str]) -> np.ndarray | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: tuple[int, int, str], value: np.ndarray) -> None:
        if value.nbytes > self.capacity:
            return
        self.entries[key] = value
        self.used += value.nbytes
        while self.used > self.capacity:
            _, evicted = self.entries.popitem(last=False)
            self.used -= evicted.nbytes


class Dataset:
    """Random access to a committed dataset; trusts only its manifest.

    Open shards and their row-group offsets are kept; decoded row groups are cached up to
    `cache_bytes` (set it above the dataset's decoded size to hold a small dataset in memory).
    """

    def __init__(self, uri: str, manifest: Manifest, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.uri, self.manifest, self.cache_bytes = uri.rstrip("/"), manifest, cache_bytes
        self.by_id = {episode.id: episode for episode in manifest.episodes}
        self._reset()

    def _reset(self) -> None:
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}
        self._cache = RowGroupCache(self.cache_bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "manifest": self.manifest, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["manifest"], state["cache_bytes"])

    @property
    def columns(self) -> dict[str, ColumnSpec]:
        return self.manifest.columns

    def episodes(self, split: Split | None = None) -> list[str]:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return [e.id for e in self.manifest.episodes if split is None or e.split == split]

    def length(self, episode_id: str) -> int:
        return self._entry(episode_id).length

    def shard_uris(self) -> list[str]:
        return [storage.join(self.uri, shard.path) for shard in self.manifest.shards]

    def read(
        self, episode_id: str, start: int = 0, stop: int | None = None, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Frames [start, stop) of an episode: {column: (stop - start, *shape) array}."""
        entry = self._entry(episode_id)
        stop = entry.length if stop is None else stop
        if not 0 <= start < stop <= entry.length:
            raise ValueError(f"{self.uri}: episode {episode_id!r} has {entry.length} frames; cannot read [{start}, {stop})")
        names = list(columns) if columns is not None else list(self.columns)
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise KeyError(f"{self.uri}: no column(s) {unknown}; the dataset has {list(self.columns)}")
        first, last = entry.row + start, entry.row + stop
        _, offsets = self._file(entry.shard)
        groups = range(int(np.searchsorted(offsets, first, "right")) - 1, int(np.searchsorted(offsets, last, "left")))
        out = {}
        for name in names:
            parts = [
                self._row_group(entry.shard, g, name)[max(first, offsets[g]) - offsets[g] : min(last, offsets[g + 1]) - offsets[g]]
                for g in groups
            ]
            out[name] = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        return out

    def verify(self) -> dict[str, int]:
        """Check every shard's size, checksum, schema and rows now; raise DataError naming the shard."""
        for index, shard in enumerate(self.manifest.shards):
            uri = storage.join(self.uri, shard.path)
            check_shard_file(uri, shard)
            self._check_rows(index, uri)
        return {"shards": len(self.manifest.shards), "bytes": self.manifest.bytes, "frames": self.manifest.frames}

    def _check_rows(self, index: int, uri: str) -> None:
        parquet, _ = self._file(index)
        check_schema(parquet.schema_arrow, self.columns, uri)
        scalars = ["episode", "frame"] + [name for name, spec in self.columns.items() if not spec.shape]
        table = parquet.read(columns=scalars)
        for episode in (e for e in self.manifest.episodes if e.shard == index):
            rows = table.slice(episode.row, episode.length)
            ids = rows.column("episode").unique().to_pylist()
            frames = rows.column("frame").to_numpy()
            if ids != [episode.id] or not np.array_equal(frames, np.arange(episode.length)):
                raise DataError(f"{uri}: rows {episode.row}..{episode.row + episode.length} do not hold episode {episode.id!r} frames 0..{episode.length - 1}")
            if "actions" in self.columns:
                check_actions(rows.column("actions").to_numpy(), f"{uri}: episode {episode.id!r}")

    def _entry(self, episode_id: str) -> EpisodeEntry:
        try:
            return self.by_id[episode_id]
        except KeyError:
            raise KeyError(f"{self.uri}: no episode {episode_id!r}") from None

    def _file(self, index: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if index not in self._files:
            shard = self.manifest.shards[index]
            uri = storage.join(self.uri, shard.path)
            check_shard_once(uri, shard)
            try:
                parquet = open_parquet(uri)
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{uri}: cannot read shard ({err})") from None
            rows = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
            self._files[index] = parquet, np.concatenate([[0], np.cumsum(rows)])
        return self._files[index]

    def _row_group(self, shard: int, group: int, name: str) -> np.ndarray:
        key = (shard, group, name)
        cached = self._cache.get(key)
        if cached is None:
            parquet, _ = self._file(shard)
            try:
                values = parquet.read_row_group(group, columns=[name]).column(name)
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{self.uri}/{self.manifest.shards[shard].path}: row group {group} unreadable ({err})") from None
            cached = from_arrow(values, self.columns[name])
            self._cache.put(key, cached)
        return cached


# (shard URI, sha256) whose file this process found intact: a shard is hashed when a process
# first opens it, not again when the dataset is reopened or unpickled in the same process.
_CHECKED_SHARDS: set[tuple[str, str]] = set()


def check_shard_once(uri: str, shard: ShardEntry) -> None:
    """`check_shard_file` the first time this process reads the shard."""
    if (uri, shard.sha256) not in _CHECKED_SHARDS:
        check_shard_file(uri, shard)
        _CHECKED_SHARDS.add((uri, shard.sha256))


def check_shard_file(uri: str, shard: ShardEntry) -> None:
    """The file is there with the size and sha256 the manifest lists; else DataError naming it."""
    if not storage.exists(uri):
        raise DataError(f"{uri}: shard listed in the manifest is missing")
    size = storage.size(uri)
    if size != shard.bytes:
        state = "truncated" if size < shard.bytes else "longer than written"
        raise DataError(f"{uri}: {state}: {size} bytes, the manifest says {shard.bytes}")
    digest = storage.sha256(uri)
    if digest != shard.sha256:
        raise DataError(f"{uri}: checksum mismatch (sha256 {digest[:12]}..., manifest {shard.sha256[:12]}...): corrupt shard")


def open_parquet(uri: str) -> pq.ParquetFile:
    fs, path = storage.filesystem(uri)
    if storage.protocol_of(fs) in ("file", "local"):
        return pq.ParquetFile(path)
    return pq.ParquetFile(fs.open(path, "rb"))


def open_dataset(uri: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Dataset:
    """Open a committed dataset (a folder or fsspec URI holding manifest.json)."""
    return Dataset(uri, load_manifest(uri), cache_bytes)
