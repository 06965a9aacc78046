"""Sharded episode store on any fsspec URI: write episodes of named array columns, read clips back.

    with DatasetWriter(uri, frame_columns(64), split=cfg.split) as writer:
        writer.add("ep-0000", {"frames": frames, "actions": actions, "pose": pose})
    dataset = open_dataset(uri)
    dataset.read("ep-0000", 10, 26, columns=["frames"])["frames"]   # (16 64 64 3) uint8

Writes are atomic: shards go to fresh names (each through `storage.atomic_open`), the manifest
is written last, and only then are shards of earlier writes removed. A crash at any point
leaves the previous dataset (or nothing) visible; a failed write (e.g. a full disk) removes what
it wrote and names the file it could not write. One writer per dataset at a time.

Reads trust the manifest, and check it: the first time a process opens a shard, its size and
sha256 are compared with the manifest's (`bench storage` measures the cost), so a damaged shard
is an error naming it, never wrong frames.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from millivid import storage
from millivid.data.columns import ColumnSpec, DataError, check_actions, episode_length
from millivid.data.config import SplitConfig
from millivid.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    EpisodeEntry,
    Manifest,
    ShardEntry,
    Split,
    assign_splits,
    count,
    frame_size,
    parse_manifest,
)
from millivid.data.shards import (
    HashingWriter,
    check_schema,
    episode_table,
    from_arrow,
    shard_schema,
)
from millivid.pose import known

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
# ~256 KiB row groups: a random frame or short clip decodes little more than it needs, while
# whole episodes still read at most ~20% slower than with 4x larger groups (bench/storage.py)
ROW_GROUP_BYTES = 256 << 10
DEFAULT_CACHE_BYTES = 256 << 20


def default_row_group_frames(columns: Mapping[str, ColumnSpec]) -> int:
    row_bytes = sum(spec.frame_bytes for spec in columns.values())
    return int(np.clip(ROW_GROUP_BYTES // max(1, row_bytes), 16, 1024))


class DatasetWriter:
    """Streams episodes into shards of about `shard_frames` frames; `commit()` publishes them.

    Used as a context manager it commits on success and removes its shards on an exception.
    `splits` (episode id -> split) overrides the seeded split, e.g. to copy a source dataset's.
    """

    def __init__(
        self,
        uri: str,
        columns: Mapping[str, ColumnSpec],
        *,
        kind: str = "frames",
        split: SplitConfig | None = None,
        splits: Mapping[str, Split] | None = None,
        shard_frames: int = 2048,
        row_group_frames: int | None = None,
        compression: str = "zstd",
        pose_known: bool = True,
        meta: Mapping[str, Any] | None = None,
    ):
        if not columns:
            raise DataError(f"{uri}: a dataset needs at least one column")
        self.uri = uri.rstrip("/")
        self.columns = dict(columns)
        self.kind, self.split = kind, split or SplitConfig()
        self.splits = dict(splits) if splits is not None else None
        self.shard_frames = shard_frames
        self.row_group_frames = row_group_frames or default_row_group_frames(self.columns)
        self.compression, self.pose_known, self.meta = compression, pose_known, dict(meta or {})
        self.generation = uuid.uuid4().hex[:12]
        self.pose_unknown_frames = 0
        self._writing = self.uri  # the file being written, named when a write fails
        self.episodes: list[tuple[str, int, int, int]] = []  # (id, length, shard, row)
        self._ids: set[str] = set()
        self.shards: list[ShardEntry] = []
        self._open: tuple[contextlib.ExitStack, pq.ParquetWriter, HashingWriter, str] | None = None
        self._open_rows = 0
        self._written: list[str] = []
        self.done = False
        self.manifest: Manifest | None = None  # set by commit()
        fs, path = storage.filesystem(self.uri)
        self._new_folders = [folder for folder in (f"{path}/{SHARD_DIR}", path) if not fs.exists(folder)]  # an abort removes them

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def add(self, episode_id: str, arrays: Mapping[str, np.ndarray]) -> None:
        where = f"{self.uri}: episode {episode_id!r}"
        if self.done:
            raise DataError(f"{where}: the writer has already committed or aborted")
        if not episode_id or episode_id in self._ids:
            raise DataError(f"{where}: episode ids must be unique and non-empty")
        length = episode_length(arrays, self.columns, where)
        table = episode_table(episode_id, arrays, self.columns, length)
        with self._aborting_on_write_errors():
            if self._open is not None and self._open_rows + length > self.shard_frames:
                self._close_shard()
            if self._open is None:
                self._open_shard()
            _, writer, _, _ = self._open
            writer.write_table(table, row_group_size=self.row_group_frames)
        self.episodes.append((episode_id, length, len(self.shards), self._open_rows))
        self._ids.add(episode_id)
        self._open_rows += length
        if "pose" in arrays:
            self.pose_unknown_frames += int((~known(arrays["pose"])).sum())

    def commit(self) -> Manifest:
        if self.done:
            raise DataError(f"{self.uri}: the writer has already committed or aborted")
        if self._open is not None:
            with self._aborting_on_write_errors():
                self._close_shard()
        if not self.episodes:
            self.abort()
            raise DataError(f"{self.uri}: no episodes to write (empty source)")
        ids = [episode_id for episode_id, *_ in self.episodes]
        splits = self.splits if self.splits is not None else assign_splits(ids, self.split)
        unassigned = sorted(set(ids) - set(splits))
        if unassigned:
            self.abort()
            raise DataError(f"{self.uri}: no split given for episodes {unassigned[:5]}")
        entries = tuple(
            EpisodeEntry(id=eid, length=length, split=splits[eid], shard=shard, row=row)
            for eid, length, shard, row in self.episodes
        )
        manifest = Manifest(
            kind=self.kind,
            columns=self.columns,
            episodes=entries,
            shards=tuple(self.shards),
            counts=count(entries),
            frame_size=frame_size(self.columns),
            pose_known=self.pose_known,
            pose_unknown_frames=self.pose_unknown_frames if "pose" in self.columns else None,
            split=self.split,
            compression=self.compression,
            row_group_frames=self.row_group_frames,
            meta=self.meta,
        )
        self._writing = storage.join(self.uri, MANIFEST_NAME)
        with self._aborting_on_write_errors():
            storage.write_json(self._writing, manifest.model_dump(mode="json"))
        self.done, self.manifest = True, manifest
        remove_unlisted_shards(self.uri, manifest)
        return manifest

    def abort(self) -> None:
        """Remove every shard this writer wrote; the previous dataset (if any) stays as it was."""
        if self._open is not None:
            stack, writer, _, relative = self._open
            self._open = None
            self._written.append(storage.join(self.uri, relative))  # object stores write the final key directly
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # atomic_open drops the temp file
        for uri in self._written:
            with contextlib.suppress(FileNotFoundError, OSError):
                storage.remove(uri)
        fs, _ = storage.filesystem(self.uri)
        for folder in self._new_folders:  # so that a failed first write leaves nothing behind
            with contextlib.suppress(OSError):
                if fs.exists(folder) and not fs.ls(folder, detail=False):
                    fs.rmdir(folder)
        self.done = True

    @contextlib.contextmanager
    def _aborting_on_write_errors(self) -> Iterator[None]:
        """A failed write (disk full, permissions, a lost object store) removes what this writer
        wrote and is reported naming the file; any previous dataset at the URI stays as it was."""
        try:
            yield
        except BaseException as err:
            self.abort()
            if not isinstance(err, OSError):
                raise
            reason = err.strerror or str(err)
            previous = "the previous dataset there is unchanged" if storage.exists(storage.join(self.uri, MANIFEST_NAME)) \
                else "nothing was left behind"
            raise DataError(f"{self._writing}: cannot write ({reason}); {previous}") from err

    def _open_shard(self) -> None:
        relative = f"{SHARD_DIR}/{self.generation}-{len(self.shards):05d}.parquet"
        self._writing = storage.join(self.uri, relative)
        stack = contextlib.ExitStack()
        handle = stack.enter_context(storage.atomic_open(storage.join(self.uri, relative)))
        hashing = HashingWriter(handle)
        writer = pq.ParquetWriter(
            hashing,
            shard_schema(self.columns),
            compression=self.compression,
            use_dictionary=["episode"],
            write_statistics=["episode", "frame"],
        )
        self._open, self._open_rows = (stack, writer, hashing, relative), 0

    def _close_shard(self) -> None:
        stack, writer, hashing, relative = self._open
        self._open = None
        writer.close()
        stack.close()
        self._written.append(storage.join(self.uri, relative))
        self.shards.append(ShardEntry(path=relative, rows=self._open_rows, bytes=hashing.size, sha256=hashing.digest.hexdigest()))


def write_dataset(
    uri: str, episodes: Iterable[tuple[str, Mapping[str, np.ndarray]]], columns: Mapping[str, ColumnSpec], **options: Any
) -> Manifest:
    """Write (episode id, arrays) pairs as one dataset; see DatasetWriter for the options."""
    with DatasetWriter(uri, columns, **options) as writer:
        for episode_id, arrays in episodes:
            writer.add(episode_id, arrays)
    return writer.manifest


def remove_unlisted_shards(uri: str, manifest: Manifest) -> None:
    """Delete shard files the manifest does not list: earlier writes and interrupted ones."""
    fs, path = storage.filesystem(storage.join(uri, SHARD_DIR))
    if not fs.exists(path):
        return
    listed = {shard.path.rsplit("/", 1)[-1] for shard in manifest.shards}
    for name in fs.ls(path, detail=False):
        if name.rsplit("/", 1)[-1] not in listed:
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.rm(name)


def refuse_to_replace(uri: str) -> None:
    """Raise DataError when `uri` already holds a dataset: replacing one is asked for, never implied."""
    if storage.exists(storage.join(uri, MANIFEST_NAME)):
        raise DataError(f"{uri}: already holds a dataset; pass --overwrite to replace it "
                        "(it stays readable until the new one is complete)")


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
