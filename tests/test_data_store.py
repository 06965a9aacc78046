import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millivid import storage
from millivid.data.columns import ColumnSpec, DataError, frame_columns
from millivid.data.config import SplitConfig
from millivid.data.manifest import MANIFEST_NAME, SCHEMA_VERSION, assign_splits
from millivid.data.reader import open_dataset
from millivid.data.writer import DatasetWriter, write_dataset


def episode(seed: int, length: int = 40, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "frames": rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        "actions": rng.integers(0, 3, length).astype(np.int8),
        "pose": rng.normal(size=(length, 5)).astype(np.float32),
    }


def episodes(count: int, first_seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
    return [(f"ep-{i}", episode(first_seed + i, 30 + 7 * i)) for i in range(count)]


@pytest.fixture
def root(storage_root):
    """Where a dataset is written: on the local disk and on the in-memory filesystem."""
    return storage_root


def shard_files(uri: str) -> list[str]:
    fs, path = storage.filesystem(storage.join(uri, "shards"))
    return sorted(name.rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)) if fs.exists(path) else []


def test_round_trip_every_range(root):
    written = episodes(5)
    manifest = write_dataset(root, written, frame_columns(8), shard_frames=70, row_group_frames=16)
    assert manifest.counts["episodes"] == 5 and manifest.frames == sum(len(e["actions"]) for _, e in written)
    assert len(manifest.shards) > 1 and manifest.frame_size == (8, 8)
    dataset = open_dataset(root)
    for episode_id, arrays in written:
        assert dataset.length(episode_id) == len(arrays["frames"])
        for start, stop in [(0, None), (3, 20), (15, 17), (16, 17), (0, 1)]:
            got = dataset.read(episode_id, start, stop)
            for name, values in arrays.items():
                np.testing.assert_array_equal(got[name], values[start:stop])
                assert got[name].dtype == values.dtype
    assert dataset.read("ep-1", 2, 5, columns=["actions"]).keys() == {"actions"}
    assert dataset.verify()["frames"] == manifest.frames


def test_latent_columns_round_trip(root):
    columns = {"latent_0": ColumnSpec(dtype="float16", shape=(16, 4)), "latent_1": ColumnSpec(dtype="float16", shape=(4, 4)), "actions": ColumnSpec(dtype="int8")}
    rng = np.random.default_rng(0)
    arrays = {"latent_0": rng.normal(size=(12, 16, 4)).astype(np.float16), "latent_1": rng.normal(size=(12, 4, 4)).astype(np.float16), "actions": np.zeros(12, np.int8)}
    write_dataset(root, [("a", arrays)], columns, kind="latents", meta={"geometry": [16, 4]})
    dataset = open_dataset(root)
    assert dataset.manifest.kind == "latents" and dataset.manifest.meta == {"geometry": [16, 4]}
    assert dataset.manifest.frame_size is None
    np.testing.assert_array_equal(dataset.read("a", 5, 9)["latent_0"], arrays["latent_0"][5:9])


def test_reads_do_not_alias_the_cache(root):
    write_dataset(root, episodes(1), frame_columns(8))
    dataset = open_dataset(root)
    first = dataset.read("ep-0", 0, 4)["frames"]
    first[:] = 0
    assert dataset.read("ep-0", 0, 4)["frames"].any()


def test_splits_are_seeded_by_episode_and_order_free():
    ids = [f"e{i}" for i in range(20)]
    splits = assign_splits(ids, SplitConfig(val=0.1, test=0.2, seed=3))
    assert list(splits.values()).count("test") == 4 and list(splits.values()).count("val") == 2
    assert assign_splits(list(reversed(ids)), SplitConfig(val=0.1, test=0.2, seed=3)) == splits
    assert assign_splits(ids, SplitConfig(val=0.1, test=0.2, seed=4)) != splits
    assert set(assign_splits(["only"], SplitConfig()).values()) == {"train"}


def test_overwrite_replaces_dataset_and_removes_old_shards(root):
    write_dataset(root, episodes(4), frame_columns(8), shard_frames=50)
    old = set(shard_files(root))
    write_dataset(root, episodes(2, first_seed=10), frame_columns(8))
    dataset = open_dataset(root)
    assert dataset.episodes() == ["ep-0", "ep-1"]
    np.testing.assert_array_equal(dataset.read("ep-0")["frames"], episode(10, 30)["frames"])
    assert not old & set(shard_files(root))
    assert set(shard_files(root)) == {s.path.rsplit("/", 1)[-1] for s in dataset.manifest.shards}


def test_exception_mid_write_keeps_old_dataset_and_leaves_nothing(root):
    write_dataset(root, episodes(2), frame_columns(8))
    before = set(shard_files(root))
    with pytest.raises(RuntimeError, match="crash"):
        with DatasetWriter(root, frame_columns(8), shard_frames=40) as writer:
            for episode_id, arrays in episodes(3, first_seed=20):
                writer.add(episode_id, arrays)
            raise RuntimeError("crash while writing")
    assert set(shard_files(root)) == before
    dataset = open_dataset(root)
    assert dataset.episodes() == ["ep-0", "ep-1"]
    dataset.verify()


def test_killed_writer_is_invisible_and_cleaned_up_by_next_write(root):
    fresh = storage.join(root, "fresh")
    for uri in (root, fresh):
        if uri == root:
            write_dataset(root, episodes(2), frame_columns(8))
        writer = DatasetWriter(uri, frame_columns(8), shard_frames=40)
        for episode_id, arrays in episodes(3, first_seed=30):
            writer.add(episode_id, arrays)
        del writer  # killed: no commit, no abort
    assert open_dataset(root).episodes() == ["ep-0", "ep-1"]
    open_dataset(root).verify()
    with pytest.raises(DataError, match="no manifest.json"):
        open_dataset(fresh)
    manifest = write_dataset(root, episodes(1), frame_columns(8))
    assert set(shard_files(root)) == {s.path.rsplit("/", 1)[-1] for s in manifest.shards}


def test_a_rewrite_removes_only_files_of_the_writers_naming(root, caplog):
    old = write_dataset(root, episodes(3), frame_columns(8), shard_frames=40)
    earlier = old.shards[0].path.rsplit("/", 1)[-1]
    leftover = f".{earlier}{storage.TMP_MARK}{'0' * 32}"  # an interrupted atomic_open's temporary file
    foreign = ["notes.txt", f"{earlier}.bak", f"x{earlier}", "0123456789ab-00000.parquet.tmp-1"]
    for name in [leftover, *foreign]:
        storage.write_bytes(storage.join(root, "shards", name), b"the user's")
    with caplog.at_level("WARNING", logger="millivid.data.writer"):
        manifest = write_dataset(root, episodes(2, first_seed=10), frame_columns(8))
        write_dataset(root, episodes(2, first_seed=20), frame_columns(8))
    listed = {s.path.rsplit("/", 1)[-1] for s in open_dataset(root).manifest.shards}
    assert set(shard_files(root)) == listed | set(foreign)
    assert not {s.path.rsplit("/", 1)[-1] for s in (*old.shards, *manifest.shards)} & listed
    assert storage.read_bytes(storage.join(root, "shards", "notes.txt")) == b"the user's"
    warned = [r.getMessage() for r in caplog.records if "left in place" in r.getMessage()]
    named = [f"{storage.join(root, 'shards', name)}: not a shard file this writer names; left in place" for name in foreign]
    assert sorted(warned) == sorted(named * 2)  # named by each of the two rewrites


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: {**e, "frames": e["frames"].astype(np.float32)}, "column 'frames' has dtype float32, expected uint8"),
        (lambda e: {**e, "frames": e["frames"][:, :4]}, r"column 'frames' has shape \(40, 4, 8, 3\)"),
        (lambda e: {**e, "actions": e["actions"][:-1]}, "columns differ in length"),
        (lambda e: {**e, "actions": np.full(40, 5, np.int8)}, r"unknown action ids \[5\]"),
        (lambda e: {k: v for k, v in e.items() if k != "pose"}, "do not match"),
        (lambda e: {k: v[:0] for k, v in e.items()}, "no frames"),
    ],
)
def test_bad_episode_is_rejected_naming_episode_and_field(tmp_path, change, message):
    with pytest.raises(DataError, match=message) as err:
        with DatasetWriter(str(tmp_path / "ds"), frame_columns(8)) as writer:
            writer.add("bad-episode", change(episode(0)))
    assert "bad-episode" in str(err.value)
    assert shard_files(str(tmp_path / "ds")) == []


def test_empty_source_and_duplicate_ids(tmp_path):
    with pytest.raises(DataError, match="no episodes"):
        write_dataset(str(tmp_path / "empty"), [], frame_columns(8))
    assert not storage.exists(str(tmp_path / "empty" / MANIFEST_NAME))
    with pytest.raises(DataError, match="unique"):
        write_dataset(str(tmp_path / "dup"), [("a", episode(0)), ("a", episode(1))], frame_columns(8))


def test_read_errors_name_the_episode(root):
    write_dataset(root, episodes(1), frame_columns(8))
    dataset = open_dataset(root)
    with pytest.raises(KeyError, match="no episode 'nope'"):
        dataset.read("nope")
    with pytest.raises(ValueError, match=r"has 30 frames; cannot read \[25, 31\)"):
        dataset.read("ep-0", 25, 31)
    with pytest.raises(KeyError, match="latent_0"):
        dataset.read("ep-0", columns=["latent_0"])


def corrupt(uri: str, how: str) -> str:
    """Damage the first shard of the dataset at `uri`; returns the shard's URI."""
    shard = storage.join(uri, open_dataset(uri).manifest.shards[0].path)
    data = bytearray(storage.read_bytes(shard))
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    storage.write_bytes(shard, bytes(data))
    return shard


@pytest.mark.parametrize("how, message", [("truncate", "truncated"), ("flip", "checksum mismatch")])
def test_verify_names_the_damaged_shard(root, how, message):
    write_dataset(root, episodes(3), frame_columns(8), shard_frames=50)
    shard = corrupt(root, how)
    with pytest.raises(DataError, match=message) as err:
        open_dataset(root).verify()
    assert shard in str(err.value)


def test_missing_shard_and_truncated_reads(root):
    write_dataset(root, episodes(2), frame_columns(8), shard_frames=30)
    shard = corrupt(root, "truncate")
    with pytest.raises(DataError, match="truncated") as err:
        open_dataset(root).read("ep-0")
    assert shard.rsplit("/", 1)[-1] in str(err.value)
    storage.remove(shard)
    with pytest.raises(DataError, match="missing"):
        open_dataset(root).verify()


def test_bad_manifests_name_the_file(tmp_path):
    uri = str(tmp_path / "ds")
    with pytest.raises(DataError, match="no manifest.json"):
        open_dataset(uri)
    write_dataset(uri, episodes(2), frame_columns(8))
    manifest_uri = storage.join(uri, MANIFEST_NAME)
    raw = storage.read_json(manifest_uri)
    storage.write_bytes(manifest_uri, b"{broken")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        open_dataset(uri)
    storage.write_json(manifest_uri, {**raw, "counts": {**raw["counts"], "frames": 1}})
    with pytest.raises(DataError, match="manifest.json: not a valid manifest.*counts"):
        open_dataset(uri)
    storage.write_json(manifest_uri, {**raw, "schema_version": 99})
    with pytest.raises(DataError, match="schema_version 99"):
        open_dataset(uri)


def rewrite_shard(uri: str, change) -> str:
    """Replace the first shard's table with change(table), keeping the manifest's checksums right."""
    dataset = open_dataset(uri)
    shard = dataset.manifest.shards[0]
    shard_uri = storage.join(uri, shard.path)
    table = change(pq.read_table(shard_uri))
    pq.write_table(table, shard_uri)
    raw = storage.read_json(storage.join(uri, MANIFEST_NAME))
    raw["shards"][0].update(bytes=storage.size(shard_uri), sha256=storage.sha256(shard_uri))
    storage.write_json(storage.join(uri, MANIFEST_NAME), raw)
    return shard_uri


def test_verify_finds_unknown_actions_and_wrong_types_inside_shards(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, episodes(1), frame_columns(8))
    actions = lambda table: table.set_column(table.schema.get_field_index("actions"), "actions", pa.array(np.full(table.num_rows, 7, np.int8)))  # noqa: E731
    shard = rewrite_shard(uri, actions)
    with pytest.raises(DataError, match=r"unknown action ids \[7\]") as err:
        open_dataset(uri).verify()
    assert shard in str(err.value)

    write_dataset(uri, episodes(1), frame_columns(8))
    raw = storage.read_json(storage.join(uri, MANIFEST_NAME))
    raw["columns"]["frames"]["dtype"] = "float16"  # the shard holds uint8 bytes
    storage.write_json(storage.join(uri, MANIFEST_NAME), raw)
    with pytest.raises(DataError, match="column 'frames' has type fixed_size_binary"):
        open_dataset(uri).verify()


def test_manifest_lists_checksums_splits_and_meta(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, episodes(6), frame_columns(8), split=SplitConfig(val=0.17, test=0.34), meta={"source": "test"})
    raw = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["kind"] == "frames" and raw["meta"] == {"source": "test"}
    assert raw["counts"] == {"episodes": 6, "frames": sum(30 + 7 * i for i in range(6)), "train": 3, "val": 1, "test": 2}
    assert raw["columns"]["frames"] == {"dtype": "uint8", "shape": [8, 8, 3]}
    shard = raw["shards"][0]
    assert shard["sha256"] == storage.sha256(str(tmp_path / "ds" / shard["path"]))
    assert {e["split"] for e in raw["episodes"]} == {"train", "val", "test"}


def test_process_killed_mid_write_leaves_old_dataset(tmp_path):
    import subprocess
    import sys
    import textwrap

    uri = str(tmp_path / "ds")
    write_dataset(uri, episodes(2), frame_columns(8))
    script = textwrap.dedent(f"""
        import os, numpy as np
        from millivid.data.columns import frame_columns
        from millivid.data.writer import DatasetWriter
        writer = DatasetWriter({uri!r}, frame_columns(8), shard_frames=40)
        for i in range(3):
            writer.add(f"new-{{i}}", {{"frames": np.zeros((30, 8, 8, 3), np.uint8),
                                     "actions": np.zeros(30, np.int8), "pose": np.zeros((30, 5), np.float32)}})
        os._exit(9)  # killed with one shard closed and one open
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert len(shard_files(uri)) > 1  # the dead writer's files are there...
    dataset = open_dataset(uri)  # ...but invisible
    assert dataset.episodes() == ["ep-0", "ep-1"]
    dataset.verify()


def test_damaged_shard_of_the_right_size_is_caught_on_an_ordinary_read(root):
    # uncompressed, so that a flipped byte of a frame would decode without complaint
    write_dataset(root, episodes(2), frame_columns(8), shard_frames=100, compression="none")
    shard = corrupt(root, "flip")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        open_dataset(root).read("ep-0")
    assert shard in str(err.value)


def test_failed_write_names_the_file_and_leaves_nothing_behind(tmp_path):
    import resource
    import subprocess
    import sys

    uri = str(tmp_path / "ds")
    script = (  # a process that may write at most 64 kB per file: a full disk, as far as this write can tell
        "import resource, signal, sys, numpy as np\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, (65536, {resource.RLIM_INFINITY}))\n"
        "from millivid.data.columns import frame_columns\n"
        "from millivid.data.writer import write_dataset\n"
        "rng = np.random.default_rng(0)\n"
        "frames = lambda: {'frames': rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),"
        " 'actions': np.zeros(40, np.int8), 'pose': np.zeros((40, 5), np.float32)}\n"
        f"write_dataset({uri!r}, [(f'ep-{{i}}', frames()) for i in range(3)], frame_columns(32), compression='none')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "DataError" in result.stderr
    assert f"{uri}/shards/" in result.stderr and "cannot write (File too large); nothing was left behind" in result.stderr
    assert not (tmp_path / "ds").exists()
