"""Writing a sharded episode dataset on any fsspec URI: episodes of named array columns, atomically.

    with DatasetWriter(uri, frame_columns(64), split=cfg.split) as writer:
        writer.add("ep-0000", {"frames": frames, "actions": actions, "pose": pose})

Writes are atomic: shards go to fresh names (each through `storage.atomic_open`), the manifest
is written last, and only then are shards of earlier writes removed. A crash at any point
leaves the previous dataset (or nothing) visible; a failed write (e.g. a full disk) removes what
it wrote and names the file it could not write. One writer per dataset at a time.
`millivid.data.reader` reads a dataset back.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from millivid import storage
from millivid.data.columns import ColumnSpec, DataError, episode_length
from millivid.data.config import SplitConfig
from millivid.data.manifest import (
    MANIFEST_NAME,
    SHARD_DIR,
    EpisodeEntry,
    Manifest,
    ShardEntry,
    Split,
    assign_splits,
    count,
    frame_size,
)
from millivid.data.shards import HashingWriter, episode_table, shard_schema
from millivid.pose import known

log = logging.getLogger(__name__)

# ~256 KiB row groups: a random frame or short clip decodes little more than it needs, while
# whole episodes still read at most ~20% slower than with 4x larger groups (bench/storage.py)
ROW_GROUP_BYTES = 256 << 10
GENERATION_CHARS = 12  # hex digits naming one writer's shards
_SHARD_NAME = rf"[0-9a-f]{{{GENERATION_CHARS}}}-[0-9]{{5,}}\.parquet"
# the names `shard_name` gives, and the temporary names `storage.atomic_open` writes them under first
WRITER_FILE = re.compile(rf"{_SHARD_NAME}|\.{_SHARD_NAME}{re.escape(storage.TMP_MARK)}[0-9a-f]{{32}}")


def shard_name(generation: str, index: int) -> str:
    return f"{generation}-{index:05d}.parquet"


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
        self.generation = uuid.uuid4().hex[:GENERATION_CHARS]
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
        relative = f"{SHARD_DIR}/{shard_name(self.generation, len(self.shards))}"
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
    """Delete the writer's own files under `shards/` that the manifest does not list: shards of
    earlier writes and of interrupted ones, and temporary files an interrupted write left.

    Only names the writer gives (`WRITER_FILE`) are removed; any other file there (a user's
    notes, a copy under another name) is kept, with a warning naming it.
    """
    fs, path = storage.filesystem(storage.join(uri, SHARD_DIR))
    if not fs.exists(path):
        return
    listed = {shard.path.rsplit("/", 1)[-1] for shard in manifest.shards}
    for name in fs.ls(path, detail=False):
        base = name.rsplit("/", 1)[-1]
        if base in listed:
            continue
        if WRITER_FILE.fullmatch(base):
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.rm(name)
        else:
            log.warning("%s: not a shard file this writer names; left in place", storage.join(uri, SHARD_DIR, base))


def refuse_to_replace(uri: str) -> None:
    """Raise DataError when `uri` already holds a dataset: replacing one is asked for, never implied."""
    if storage.exists(storage.join(uri, MANIFEST_NAME)):
        raise DataError(f"{uri}: already holds a dataset; pass --overwrite to replace it "
                        "(it stays readable until the new one is complete)")
