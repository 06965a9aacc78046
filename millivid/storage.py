"""Files on any fsspec URI (local path, memory://, s3://, gs://, ...), written atomically.

Readers never see half-written files: a local write goes to a hidden temporary name in the
same folder and is renamed into place; object stores publish an object only once its upload
completes, so there the write goes straight to the final key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
TMP_MARK = ".tmp-"


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding `uri` and the path inside it."""
    return url_to_fs(uri)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def protocol_of(fs: fsspec.AbstractFileSystem) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, (tuple, list)) else protocol


def is_temporary(name: str) -> bool:
    return TMP_MARK in name.rsplit("/", 1)[-1]


@contextlib.contextmanager
def atomic_open(uri: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `uri` for writing; the file appears under its name only if the block finishes."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes only ('wb' or 'w'), got {mode!r}")
    fs, path = filesystem(uri)
    parent, _, name = path.rpartition("/")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if protocol_of(fs) in OBJECT_STORES:
        with object_upload(fs, path, mode) as handle:
            yield handle
        return
    tmp = f"{parent}/.{name}{TMP_MARK}{uuid.uuid4().hex}" if parent else f".{name}{TMP_MARK}{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.rm(tmp)
        raise


@contextlib.contextmanager
def object_upload(fs: fsspec.AbstractFileSystem, path: str, mode: str) -> Iterator[IO[Any]]:
    """An object store's file whose object appears only when the block finishes: opened with
    fsspec's `autocommit=False`, its upload is completed by `commit()` after the block; when the
    block (or the upload) raises, it is abandoned (`abandon`). An upload left unfinished by a killed
    writer is invisible to readers (the bucket's lifecycle rule aborts it)."""
    raw = fs.open(path, "wb", autocommit=False)
    handle = io.TextIOWrapper(raw, encoding="utf-8") if mode == "w" else raw
    try:
        yield handle
        handle.close()  # uploads what is buffered; a text handle flushes into `raw` first
        raw.commit()
    except BaseException:
        abandon(raw)
        raise


def abandon(raw: Any) -> None:
    """Throw an unfinished upload away without sending what is still buffered: `discard()` aborts a
    multipart upload already begun (s3fs), and the file is marked closed so that neither `close()`
    nor its finalizer uploads the buffer (and a text wrapper around it flushes nothing). With the
    store down, the abort costs one more retry budget before the block's error goes on."""
    with contextlib.suppress(Exception):  # the store may be what failed
        raw.discard()
    raw.closed = True


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_open(uri, "wb") as handle:
        handle.write(data)


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        return handle.read()


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as err:
        raise ValueError(f"{uri}: not valid JSON ({err})") from err


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def sha256(uri: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)
