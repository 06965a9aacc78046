"""The object store down for a while and back, down for good, and writes that stop half-way.

Against moto's S3 server on 127.0.0.1 (no S3 mock), stopped and started again on the same port.
The retries are botocore's "standard" mode (`platform/object_store.py`); the tests read the
attempts and the delays it chose from its debug log. moto keeps objects in memory, so a restarted
server is empty: what a write leaves behind is checked while the server stays up (a writer that
fails or is killed half-way), and the write that rides out an outage creates its bucket itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import fsspec.config
import pytest
import s3fs

from millivid import storage
from millivid.data.columns import DataError, frame_columns
from millivid.data.reader import open_dataset
from millivid.data.writer import DatasetWriter
from millivid_platform import local_cluster, object_store
from millivid_platform.object_store import ObjectStoreSettings, ObjectStoreUnavailable

pytestmark = pytest.mark.integration

BUCKET = "millivid-store"
PART = 5 * 2**20  # S3's smallest multipart part: writes above it are uploaded in parts before they complete
RETRY_LOG, REQUEST_LOG = "botocore.retries.standard", "botocore.endpoint"


@pytest.fixture
def store(tmp_path) -> Iterator[local_cluster.ObjectStore]:
    store = local_cluster.object_store(tmp_path)
    try:
        store.make_bucket(BUCKET)
        yield store
    finally:
        store.stop()


def use_store(monkeypatch, store: local_cluster.ObjectStore, max_attempts: int) -> s3fs.S3FileSystem:
    """Point this process's S3 clients at `store` with the project's settings and a budget of
    `max_attempts` per request, with parts of `PART` bytes; everything is undone after the test."""
    settings = {**store.environment(), "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS": str(max_attempts),
                "FSSPEC_S3": "", "AWS_RETRY_MODE": "", "AWS_MAX_ATTEMPTS": ""}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # recorded by monkeypatch, so export_environment's values go again too
    monkeypatch.setitem(fsspec.config.conf, "s3", {"default_block_size": PART})
    ObjectStoreSettings().export_environment()
    s3fs.S3FileSystem.clear_instance_cache()  # a client made with another test's endpoint or budget
    return storage.filesystem(f"s3://{BUCKET}")[0]


def watch_requests(caplog) -> None:
    for name in (RETRY_LOG, REQUEST_LOG):
        caplog.set_level(logging.DEBUG, logger=name)


def retry_delays(caplog) -> list[float]:
    """The delays (s) botocore chose before each retry, in order: "retrying request after delay of: X"."""
    return [float(record.getMessage().rsplit(":", 1)[1]) for record in caplog.records
            if record.name == RETRY_LOG and "retrying request after delay of" in record.getMessage()]


def request_times(caplog) -> list[float]:
    """When each HTTP request was sent (epoch seconds), attempts and retries alike."""
    return [record.created for record in caplog.records
            if record.name == REQUEST_LOG and record.getMessage().startswith("Sending http request")]


def backoff_bound(retry: int) -> float:
    """The most botocore waits before retry `retry` (1-based): rand(0, 1) * min(2 ** (retry - 1), 20) s."""
    return min(2.0 ** (retry - 1), 20.0)


def test_a_store_down_for_a_while_is_waited_for_with_backoff_then_the_write_goes_through(store, monkeypatch, caplog):
    """Down for 3 s (plus moto's start): the write's first request is retried with growing waits
    and the write completes once the store is back, within the budget; no error reaches the caller.

    The waits are botocore's (standard mode: random below a bound that doubles): the test checks the
    client runs that policy with the project's budget, that each wait stayed under its bound and was
    slept; a policy of fixed waits below the bounds would pass the timing checks alone."""
    fs = use_store(monkeypatch, store, max_attempts=8)
    uri = f"s3://{BUCKET}/outputs/state.json"
    watch_requests(caplog)
    restart_times: list[float] = []  # when the new server started, when it was accepting connections

    def start_again() -> None:
        restart_times.append(time.time())
        store.start_again()
        restart_times.append(time.time())

    store.stop()
    restart = threading.Timer(3.0, start_again)
    restart.start()
    try:
        with object_store.diagnosed(uri):
            storage.write_json(uri, {"step": 3})  # atomic_open creates the (restarted, empty) store's bucket first
    finally:
        restart.join()
    assert storage.read_json(uri) == {"step": 3}
    assert fs.s3.meta.config.retries == {"total_max_attempts": 8, "mode": "standard"}  # the policy, with our budget

    delays = retry_delays(caplog)
    # 3 s down, and moto takes a while to start: the first two attempts (at 0 and <= 1 s) fail at least
    assert 2 <= len(delays) < 8, delays
    for retry, delay in enumerate(delays, start=1):  # full jitter: each wait is random below a bound that doubles
        assert 0 <= delay <= backoff_bound(retry), (retry, delays)
    sent = request_times(caplog)
    waited = [later - earlier for earlier, later in zip(sent, sent[1:], strict=False)][:len(delays)]
    assert all(gap >= delay - 0.05 for gap, delay in zip(waited, delays, strict=True)), (waited, delays)  # it slept them
    last_failed, first_through = sent[len(delays) - 1], sent[len(delays)]
    starting, up = restart_times
    assert last_failed < up and first_through > starting, (sent, restart_times)  # tries failed while down; one after the restart went through


def test_a_storage_root_in_a_missing_bucket_fails_at_the_start_naming_it(store, monkeypatch):
    use_store(monkeypatch, store, max_attempts=3)
    root = "s3://typo-bucket/storage"
    with pytest.raises(FileNotFoundError, match=f"MILLIVID_STORAGE_ROOT={root}: bucket 'typo-bucket' does not exist "
                                                f"on the object store at {store.endpoint}"):
        object_store.check_reachable(root)
    object_store.check_reachable(f"s3://{BUCKET}/storage")  # the bucket that is there


def test_a_storage_root_without_credentials_fails_at_the_start_naming_what_to_set(store, monkeypatch, tmp_path):
    use_store(monkeypatch, store, max_attempts=3)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))  # nor a profile of this machine's
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    root = f"s3://{BUCKET}/storage"
    with pytest.raises(PermissionError, match=f"MILLIVID_STORAGE_ROOT={root}: .* refused to list bucket '{BUCKET}'; "
                                              "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        object_store.check_reachable(root)


def test_a_store_that_stays_down_fails_after_the_budget_with_one_error_naming_it(store, monkeypatch, caplog):
    """The store goes away in the middle of a multipart write and does not come back: the write
    fails after MILLIVID_OBJECT_STORE_MAX_ATTEMPTS attempts with `ObjectStoreUnavailable` naming the
    endpoint, the URI and the settings to check; so does the check a pipeline starts with."""
    use_store(monkeypatch, store, max_attempts=3)
    uri = f"s3://{BUCKET}/checkpoints/state.pt"
    watch_requests(caplog)
    with pytest.raises(ObjectStoreUnavailable) as caught, object_store.diagnosed(uri), storage.atomic_open(uri) as handle:
        handle.write(os.urandom(PART + 1))  # the first part is uploaded now
        store.stop()
        handle.write(os.urandom(PART + 1))  # the second part: the store is gone
    message = str(caught.value)
    assert f"the object store at {store.endpoint} (AWS_ENDPOINT_URL) did not answer for {uri} after 3 attempts" in message
    assert "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS" in message and "MILLIVID_STORAGE_ROOT" in message

    caplog.clear()
    root = f"s3://{BUCKET}/storage"
    with pytest.raises(ObjectStoreUnavailable, match=f"the object store at {store.endpoint} .* did not answer for {root} after 3 attempts"):
        object_store.check_reachable(root)
    delays = retry_delays(caplog)
    assert len(request_times(caplog)) == 3 and len(delays) == 2, (request_times(caplog), delays)  # the budget, first try included
    assert all(delay <= backoff_bound(retry) for retry, delay in enumerate(delays, start=1)), delays


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["one-part", "multipart"])
def test_a_write_that_fails_half_way_leaves_no_object_at_its_key(store, monkeypatch, size):
    """The code writing an object raises half-way (a serializer's error, a full buffer, Ctrl-C):
    nothing appears at the key, neither a truncated object nor a listing entry, and the upload is
    aborted (no unfinished multipart upload left), what was still buffered never sent."""
    fs = use_store(monkeypatch, store, max_attempts=3)
    uri = f"s3://{BUCKET}/models/model.pt"
    with pytest.raises(RuntimeError, match="serializer failed"), storage.atomic_open(uri) as handle:
        handle.write(os.urandom(size))
        raise RuntimeError("serializer failed")
    assert fs.find(BUCKET, refresh=True) == [], f"{uri}: {fs.size(uri)} of the {size} bytes written were published"
    assert fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", []) == []


WRITER = """
import sys, time
from millivid import storage
from millivid_platform.object_store import ObjectStoreSettings
import fsspec.config
ObjectStoreSettings().export_environment()
fsspec.config.conf["s3"]["default_block_size"] = int(sys.argv[2])
with storage.atomic_open(sys.argv[1]) as handle:
    handle.write(b"x" * (int(sys.argv[2]) + 1))  # its first part is uploaded here
    print("uploading", flush=True)
    time.sleep(600)
"""


def test_a_writer_killed_half_way_through_an_upload_leaves_no_object(store, monkeypatch):
    """A process writing a checkpoint dies (SIGKILL) with one part of its upload in the store: the
    key stays empty and unlisted. The unfinished upload is invisible to readers; it stays in the
    bucket until a lifecycle rule (AbortIncompleteMultipartUpload, docs/operations.md) removes it."""
    fs = use_store(monkeypatch, store, max_attempts=3)
    uri = f"s3://{BUCKET}/checkpoints/autoencoder/state.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, uri, str(PART)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "uploading"
        uploads = fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", [])
        assert [upload["Key"] for upload in uploads] == ["checkpoints/autoencoder/state.pt"], uploads  # killed mid-upload
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert not fs.exists(uri)
    assert fs.find(BUCKET, refresh=True) == []  # nothing a reader could take for a checkpoint


def test_a_dataset_write_that_fails_half_way_on_s3_leaves_no_manifest_and_no_shard(store, monkeypatch):
    """A dataset (shards, then the manifest) whose episodes stop coming after two shards were
    written: the writer removes its shards and no manifest is written, so no reader opens it."""
    import numpy as np

    fs = use_store(monkeypatch, store, max_attempts=3)
    uri = f"s3://{BUCKET}/storage/data/abc"
    rng = np.random.default_rng(0)
    arrays = {"frames": rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), "actions": np.zeros(20, np.int8),
              "pose": np.zeros((20, 5), np.float32)}
    with pytest.raises(RuntimeError, match="renderer failed"), DatasetWriter(uri, frame_columns(8), shard_frames=20) as writer:
        for index in range(3):
            writer.add(f"ep-{index}", arrays)  # the third closes the second shard
        raise RuntimeError("renderer failed")
    assert fs.find(BUCKET, refresh=True) == []
    with pytest.raises(DataError, match="no manifest.json"):
        open_dataset(uri)
