"""Episode store throughput, and the frame encodings it was chosen from.

Frames are rendered 64x64 block-world frames (real content: textures, sky, fog). Times are
process CPU seconds (best of a few repeats; files sit in the page cache), so the numbers say
what decoding costs, not how busy the shared machine is.

- encodings: bytes per frame, write and read frames/s of one Parquet file per encoding.
- store: write frames/s, sequential episode reads and random 16-frame clips (cold and warm
  row-group cache), and `read_fraction`: sequential store reads over reading the same frames
  from an uncompressed .npy file (the goal is >= 0.5).
- row_groups: random single frames and 16-frame clips (cold cache) and whole episodes, by
  frames per row group: the trade-off behind the default row-group size.
- shard_check: the sha256 check of a shard when a process first opens it (what catches a
  damaged shard on ordinary reads): its speed, and what it adds to a first pass over the data
  and to the first clip read from a shard.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from einops import rearrange
from PIL import Image

from millivid import storage
from millivid.data.clips import ClipLoader
from millivid.data.columns import ColumnSpec, frame_columns
from millivid.data.config import DataConfig
from millivid.data.generate import render_episode
from millivid.data.reader import check_shard_file, open_dataset
from millivid.data.shards import from_arrow, to_arrow, unflatten
from millivid.data.writer import default_row_group_frames, write_dataset


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return max(min(times), 1e-9)


def png_encode(frames: np.ndarray) -> pa.Array:
    def one(frame: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        return buffer.getvalue()

    return pa.array([one(frame) for frame in frames], pa.binary())


def png_decode(values: pa.ChunkedArray) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in values.to_pylist()])


def list_encode(frames: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(rearrange(frames, "t h w c -> (t h w c)")), frames[0].size)


def list_decode(values: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    return unflatten(values.combine_chunks().flatten().to_numpy(), shape)


def encodings(frames: np.ndarray, folder: Path, repeats: int) -> dict[str, dict[str, float]]:
    spec = ColumnSpec(dtype="uint8", shape=frames.shape[1:])
    rows = default_row_group_frames({"frames": spec})
    variants = {
        "binary+none": (lambda f: to_arrow(f, spec), lambda v: from_arrow(v, spec), "none"),
        "binary+snappy": (lambda f: to_arrow(f, spec), lambda v: from_arrow(v, spec), "snappy"),
        "binary+lz4": (lambda f: to_arrow(f, spec), lambda v: from_arrow(v, spec), "lz4"),
        "binary+zstd": (lambda f: to_arrow(f, spec), lambda v: from_arrow(v, spec), "zstd"),
        "list+zstd": (list_encode, lambda v: list_decode(v, spec.shape), "zstd"),
        "png+none": (png_encode, png_decode, "none"),
    }
    out = {}
    for name, (encode, decode, compression) in variants.items():
        path = str(folder / f"{name}.parquet")

        def write(encode=encode, compression=compression, path=path):
            pq.write_table(pa.table({"frames": encode(frames)}), path, compression=compression, row_group_size=rows, use_dictionary=False, write_statistics=False)

        def read(decode=decode, path=path):
            decoded = decode(pq.read_table(path).column("frames"))
            assert decoded.shape == frames.shape

        write_s, read_s = best_seconds(write, repeats), best_seconds(read, repeats)
        out[name] = {
            "bytes_per_frame": round(Path(path).stat().st_size / len(frames), 1),
            "write_frames_per_s": round(len(frames) / write_s),
            "read_frames_per_s": round(len(frames) / read_s),
        }
    return out


def store(episodes: list[tuple[str, dict]], folder: Path, repeats: int) -> dict[str, float]:
    frames = sum(len(e["frames"]) for _, e in episodes)
    uri = str(folder / "store")
    write_s = best_seconds(lambda: write_dataset(uri, episodes, frame_columns(64), shard_frames=1024), repeats)
    raw = folder / "frames.npy"
    np.save(raw, np.concatenate([e["frames"] for _, e in episodes]))
    raw_s = best_seconds(lambda: np.load(raw), repeats)

    def sequential():
        dataset = open_dataset(uri, cache_bytes=0)
        for episode_id in dataset.episodes():
            dataset.read(episode_id, columns=["frames"])

    sequential_s = best_seconds(sequential, repeats)
    result = {
        "write_frames_per_s": round(frames / write_s),
        "read_frames_per_s": round(frames / sequential_s),
        "raw_npy_read_frames_per_s": round(frames / raw_s),
        "read_fraction": round(raw_s / sequential_s, 3),
        "bytes_per_frame": round(open_dataset(uri).manifest.bytes / frames, 1),
    }
    for label, cache in (("cold", 0), ("warm", 1 << 30)):
        loader = ClipLoader(open_dataset(uri, cache_bytes=cache), length=16, batch_size=32, split=None, columns=["frames"])
        loader.batch(0)  # a warm cache has seen the data once
        for index in range(1, 4 * len(loader.episodes)):
            if label == "warm":
                loader.batch(index)
        clip_s = best_seconds(lambda loader=loader: [loader.batch(i) for i in range(8)], repeats)
        result[f"clip_frames_per_s_{label}"] = round(8 * 32 * 16 / clip_s)
    return result


def row_groups(episodes: list[tuple[str, dict]], folder: Path, repeats: int, sizes: tuple[int, ...]) -> dict[str, dict]:
    frames = sum(len(e["frames"]) for _, e in episodes)
    out = {}
    for rows in sizes:
        uri = str(folder / f"rows-{rows}")
        write_dataset(uri, episodes, frame_columns(64), row_group_frames=rows)
        dataset = open_dataset(uri, cache_bytes=0)
        result = {"bytes_per_frame": round(dataset.manifest.bytes / frames, 1)}
        for length in (1, 16):
            loader = ClipLoader(dataset, length=length, batch_size=32, split=None, columns=["frames"])
            seconds = best_seconds(lambda loader=loader: [loader.batch(i) for i in range(8)], repeats)
            result[f"clip{length}_frames_per_s"] = round(8 * 32 * length / seconds)
        seconds = best_seconds(lambda dataset=dataset: [dataset.read(e, columns=["frames"]) for e in dataset.episodes()], repeats)
        result["episode_frames_per_s"] = round(frames / seconds)
        out[str(rows)] = result
    return out


def shard_check(episodes: list[tuple[str, dict]], folder: Path, repeats: int) -> dict[str, float]:
    uri = str(folder / "checked")
    write_dataset(uri, episodes, frame_columns(64), shard_frames=1024)
    dataset = open_dataset(uri, cache_bytes=0)
    shards = [(storage.join(uri, shard.path), shard) for shard in dataset.manifest.shards]
    check_s = best_seconds(lambda: [check_shard_file(shard_uri, shard) for shard_uri, shard in shards], repeats)
    read_s = best_seconds(lambda: [dataset.read(e, columns=["frames"]) for e in dataset.episodes()], repeats)
    first = dataset.manifest.episodes[0]
    clip_s = best_seconds(lambda: open_dataset(uri, cache_bytes=0).read(first.id, 0, 16, ["frames"]), repeats)
    one_check_s = best_seconds(lambda: check_shard_file(*shards[first.shard]), repeats)
    return {
        "check_mb_per_s": round(dataset.manifest.bytes / 1e6 / check_s),
        "first_pass_overhead": round(check_s / read_s, 3),
        "clip_read_ms": round(1000 * clip_s, 2),  # a 16-frame clip from a fresh open, its shard already checked
        "clip_shard_check_ms": round(1000 * one_check_s, 2),  # what the first such read in a process adds
    }


def run(quick: bool = False) -> dict:
    count, length, repeats = (2, 128, 2) if quick else (8, 256, 3)
    cfg = DataConfig(frames=length, size=64, hold=3)
    episodes = [(f"ep-{i}", render_episode(cfg, i)) for i in range(count)]
    frames = np.concatenate([e["frames"] for _, e in episodes])
    with tempfile.TemporaryDirectory(prefix="millivid-bench-storage-") as tmp:
        folder = Path(tmp)
        return {
            "benchmark": "storage",
            "frames": len(frames),
            "frame_bytes": int(frames[0].nbytes),
            "row_group_frames": default_row_group_frames(frame_columns(64)),
            "encodings": encodings(frames, folder, repeats),
            "store": store(episodes, folder, repeats),
            "row_groups": row_groups(episodes, folder, repeats, (16, 85) if quick else (8, 21, 85, 256)),
            "shard_check": shard_check(episodes, folder, repeats),
        }
