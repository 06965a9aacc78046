"""bench/scale.py's checkpoint throughput against an S3 API (moto's server): the part of
`millivid bench scale` that needs no cluster (the whole benchmark takes minutes; docs/benchmarks.md)."""

from __future__ import annotations

import fsspec.config
import pytest

from millivid_bench.scale import checkpoint_throughput
from millivid_platform import local_cluster

pytestmark = pytest.mark.integration


def test_checkpoint_throughput_round_trips_a_state_dict_through_s3_and_removes_it(tmp_path, monkeypatch):
    store = local_cluster.object_store(tmp_path)
    try:
        store.make_bucket("bench")
        for key, value in store.environment().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": store.endpoint})
        result = checkpoint_throughput("s3://bench/root", megabytes=8, repeats=1)
        assert result["megabytes"] == pytest.approx(8.4, abs=0.2)
        for key in ("serialize", "write", "read", "deserialize", "ray_upload", "ray_download"):
            assert result[f"{key}_mb_per_s"] > 0, result
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=store.endpoint, key="testing", secret="testing")
        assert fs.find("bench") == []  # nothing left behind
    finally:
        store.process.stop()
