"""`millivid data render|import|info|preview`: make, inspect and look at video datasets."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from millivid.world.policies import POLICIES
from millivid_cli.main import CommandError, emit, key_value_lines


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    render = sub.add_parser("render", help="render episodes of the built-in block world", description="Render episodes of the built-in block world into a dataset.")
    render.add_argument("--out", required=True, help="dataset folder or fsspec URI")
    render.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out (atomically)")
    render.add_argument("--episodes", type=int, help="episodes to render")
    render.add_argument("--frames", type=int, help="frames per episode")
    render.add_argument("--seed", type=int)
    render.add_argument("--size", type=int, help="frame side in pixels (a power of two)")
    render.add_argument("--hold", type=int, help="frames each action is held for")
    render.add_argument("--policy", choices=POLICIES, help="trajectories: return trips, 360 turns, revisits, wandering, or a mix")
    render.add_argument("--shard-frames", type=at_least_one, dest="shard_frames", help="frames per Parquet shard")
    render.add_argument("--config", help="take the data defaults from a preset (smoke, cpu, paper) or YAML file")
    render.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.world.turn_degrees=15")
    render.set_defaults(handler=_user_errors(run_render))

    source = sub.add_parser("import", help="import .npz / .mp4+.npz episodes (TECO layouts)", description="Import episodes: NAME.npz with video and actions, or NAME.mp4 with NAME.npz holding actions.")
    source.add_argument("source", metavar="SRC", help="folder or fsspec URI holding the episodes")
    source.add_argument("--out", required=True, help="dataset folder or fsspec URI")
    source.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out (atomically)")
    source.add_argument("--size", type=at_least_one, help="resize frames (centre crop, area average) to this side")
    source.add_argument("--action-map", dest="action_map", default="", help="source:target action ids, e.g. 3:0,4:1")
    source.add_argument("--shard-frames", type=at_least_one, dest="shard_frames", default=2048, help="frames per Parquet shard")
    source.add_argument("--val", type=float, default=0.1, help="fraction of episodes for validation")
    source.add_argument("--test", type=float, default=0.2, help="fraction of episodes for test")
    source.add_argument("--split-seed", type=int, dest="split_seed", default=0)
    source.set_defaults(handler=_user_errors(run_import))

    info = sub.add_parser("info", help="summarise a dataset (and verify its checksums)", description="Summarise a dataset.")
    info.add_argument("uri", metavar="URI")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--verify", action="store_true", help="check every shard's checksum, schema and rows; exit 1 naming a bad shard")
    info.set_defaults(handler=_user_errors(run_info))

    preview = sub.add_parser("preview", help="save frames of an episode as a PNG grid, MP4 or GIF", description="Save frames of one episode as a PNG grid, an MP4 or GIF video, or (FILE ending in path.png) the camera path.")
    preview.add_argument("uri", metavar="URI")
    preview.add_argument("--out", required=True, help="FILE.png, FILE.mp4, FILE.gif or FILE-path.png (local path or URI)")
    preview.add_argument("--episode", help="episode id (default: the first test episode)")
    preview.add_argument("--frames", type=int, help="frames to show (default: 16 for a grid, all for a video)")
    preview.add_argument("--start", type=int, default=0, help="first frame")
    preview.add_argument("--every", type=int, help="frame step (default: spread over the episode for a grid, 1 for a video)")
    preview.set_defaults(handler=_user_errors(run_preview))


def _user_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Dataset problems (bad files, wrong shapes, unknown episodes) become one-line errors."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from millivid.data.columns import DataError

        try:
            return handler(args)
        except (DataError, KeyError, FileNotFoundError) as err:
            raise CommandError(str(err).strip("'\"")) from None

    return wrapped


def progress_printer(what: str) -> Callable[[int, int], None]:
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"{what} {done}/{total} episodes, {elapsed:.1f} s", file=sys.stderr, flush=True)

    return show


def data_config(args: argparse.Namespace):
    from pydantic import ValidationError

    from millivid.config import (
        ConfigError,
        apply_overrides,
        describe_validation_error,
        load_config,
        validate_config,
    )
    from millivid.data.config import DataConfig

    if args.config:
        base = load_config(args.config, args.overrides).data
    else:
        base = validate_config(apply_overrides({}, args.overrides), origin="defaults").data
    fields = ("episodes", "frames", "seed", "size", "hold", "policy", "shard_frames")
    updates = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    try:
        return DataConfig.model_validate({**base.model_dump(), **updates})
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, "data options")) from None


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def check_out(uri: str, overwrite: bool) -> None:
    """--out is a new or empty folder, or a dataset (replaced only with --overwrite); never a folder
    holding other files, which writing a dataset there could delete (its `shards/`)."""
    from millivid import storage
    from millivid.data.columns import DataError
    from millivid.data.manifest import MANIFEST_NAME
    from millivid.data.writer import refuse_to_replace

    if not overwrite:
        refuse_to_replace(uri)
    if storage.exists(storage.join(uri, MANIFEST_NAME)):
        return
    fs, path = storage.filesystem(uri)
    if fs.isdir(path) and fs.ls(path, detail=False):
        raise DataError(f"{uri}: holds files but no dataset ({MANIFEST_NAME}); write the dataset to a new or empty folder")


def run_render(args: argparse.Namespace) -> int:
    from millivid.data.generate import render_dataset

    cfg = data_config(args)
    check_out(args.out, args.overwrite)
    started = time.perf_counter()
    manifest = render_dataset(cfg, args.out, progress=progress_printer("rendered"))
    elapsed = time.perf_counter() - started
    print(f"wrote {args.out}: {manifest.counts['episodes']} episodes, {manifest.frames} frames of {cfg.size}x{cfg.size} "
          f"({manifest.frames / elapsed:.0f} frames/s), {manifest.bytes / 1e6:.1f} MB")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from millivid.config import ConfigError
    from millivid.data.config import SplitConfig
    from millivid.data.importers import import_dataset, parse_action_map

    try:
        split = SplitConfig(val=args.val, test=args.test, seed=args.split_seed)
    except ValidationError as err:
        raise ConfigError(f"--val {args.val:g} / --test {args.test:g}: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    check_out(args.out, args.overwrite)
    manifest = import_dataset(
        args.source,
        args.out,
        size=args.size,
        action_map=parse_action_map(args.action_map),
        split=split,
        shard_frames=args.shard_frames,
        progress=progress_printer("imported"),
    )
    print(f"wrote {args.out}: {manifest.counts['episodes']} episodes, {manifest.frames} frames, {manifest.bytes / 1e6:.1f} MB")
    return 0


def summary(uri: str, verify: bool) -> dict[str, Any]:
    from millivid.data.manifest import SPLITS
    from millivid.data.reader import open_dataset

    dataset = open_dataset(uri)
    manifest = dataset.manifest
    height, width = manifest.frame_size or (None, None)
    result: dict[str, Any] = {
        "uri": uri,
        "kind": manifest.kind,
        "episodes": manifest.counts["episodes"],
        "frames": manifest.frames,
        "height": height,
        "width": width,
        "splits": {split: manifest.counts[split] for split in SPLITS},
        "bytes": manifest.bytes,
        "bytes_per_frame": round(manifest.bytes / manifest.frames, 1),
        "shards": len(manifest.shards),
        "columns": {name: {"dtype": spec.dtype, "shape": list(spec.shape)} for name, spec in manifest.columns.items()},
        "pose_known": manifest.pose_known,
        "pose_unknown_frames": manifest.pose_unknown_frames,
        "source": manifest.meta.get("source"),
        "skipped_files": len(manifest.meta.get("skipped_files", {})),
    }
    if verify:
        dataset.verify()
        result["verified"] = True
    return result


def run_info(args: argparse.Namespace) -> int:
    return emit(summary(args.uri, args.verify), args.json, text=functools.partial(key_value_lines, key_width=16))


def run_preview(args: argparse.Namespace) -> int:
    from millivid.data.preview import preview

    episode = preview(args.uri, args.out, episode=args.episode, frames=args.frames, start=args.start, every=args.every)
    print(f"wrote {args.out} (episode {episode})")
    return 0
