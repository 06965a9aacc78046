"""A store dataset as a Ray Data dataset of frames, for Ray Train workers.

    train = ray_dataset(uri, "train", columns=["frames"])
    TorchTrainer(loop, datasets={"train": train}, ...)
    # in the loop:
    for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=32):
        batch["frames"]   # (b h w 3) uint8 tensor

Rows are frames in shard order; `episode_index` (position in the manifest) and `frame` say
where each came from. The shards are read through the dataset URI's fsspec filesystem, so
local folders, memory:// (single process) and object stores all work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millivid import storage
from millivid.data.columns import ColumnSpec
from millivid.data.manifest import Split
from millivid.data.reader import check_shard_once, load_manifest
from millivid.data.shards import from_arrow
from millivid_platform.compute import pyarrow_filesystem


def ray_dataset(uri: str, split: Split | None = "train", columns: Sequence[str] | None = None):
    """A `ray.data.Dataset` of the frames of `split` (None: all), with decoded array columns."""
    import ray.data

    manifest = load_manifest(uri)
    names = list(columns) if columns is not None else list(manifest.columns)
    unknown = sorted(set(names) - set(manifest.columns))
    if unknown:
        raise KeyError(f"{uri}: no column(s) {unknown}; the dataset has {list(manifest.columns)}")
    for shard in manifest.shards:  # as every read of the store does: a damaged shard is an error, not frames
        check_shard_once(storage.join(uri, shard.path), shard)
    filesystem, root = pyarrow_filesystem(uri)
    paths = [f"{root.rstrip('/')}/{shard.path}" for shard in manifest.shards]
    wanted = {e.id: index for index, e in enumerate(manifest.episodes) if split is None or e.split == split}
    dataset = ray.data.read_parquet(paths, filesystem=filesystem, columns=["episode", "frame", *names])
    specs = {name: manifest.columns[name] for name in names}
    return dataset.map_batches(decode_batch, batch_format="pyarrow", fn_kwargs={"specs": specs, "wanted": wanted})


def decode_batch(table: pa.Table, specs: Mapping[str, ColumnSpec], wanted: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Keep the rows of `wanted` episodes; raw binary columns become (n, *shape) arrays."""
    table = table.filter(pc.is_in(table["episode"], value_set=pa.array(list(wanted), pa.string())))
    episodes = table["episode"].to_pylist()
    out = {
        "episode_index": np.array([wanted[e] for e in episodes], np.int32),
        "frame": table["frame"].to_numpy().astype(np.int32),
    }
    for name, spec in specs.items():
        out[name] = np.array(from_arrow(table[name], spec))
    return out
