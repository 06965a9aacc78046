"""Import episodes from other layouts into the store, from a local folder or any fsspec URI.

Layouts (TECO's): `NAME.npz` holding `video` (T, H, W, 3) uint8 and `actions` (T,) int (DMLab),
or `NAME.mp4` next to `NAME.npz` holding `actions` (Minecraft); an episode with both an `.mp4`
and a `video` array is refused (which one is its video?). Every other file is skipped, and each
skipped file is reported (a warning, and `skipped_files` in the manifest's meta). Frames are
centre-cropped to a square and area-averaged to `size`; action ids go through `action_map` and
must end up in 0 forward, 1 turn left, 2 turn right. An `.npz` may also hold `poses` (T, 5)
float: camera x, y, z, yaw, pitch per frame (millivid.pose), NaN where unknown, never infinite.
Episodes without poses get NaN poses; the manifest says `pose_known: true` when at least one
episode brought its poses, and counts the frames of unknown pose (a warning says how many).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import av
import numpy as np
from einops import reduce
from PIL import Image

from millivid import storage
from millivid.data.columns import DataError, check_actions, frame_columns
from millivid.data.config import SplitConfig
from millivid.data.manifest import SPLITS, Manifest
from millivid.data.writer import DatasetWriter
from millivid.pose import POSE_FIELDS

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SourceEpisode:
    id: str
    npz: str  # URI of the .npz (actions, and video when there is no mp4)
    mp4: str | None


def parse_action_map(text: str) -> dict[int, int]:
    """'3:0,4:1' -> {3: 0, 4: 1}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition(":")
        try:
            if not sep:
                raise ValueError
            mapping[int(source)] = int(target)
        except ValueError:
            raise DataError(f"action map item {item!r}: expected SOURCE:TARGET integers, e.g. 3:0,4:1") from None
    return mapping


def find_episodes(source: str) -> tuple[list[SourceEpisode], dict[str, str]]:
    """The episodes under `source`, and every other file there with why it is not taken."""
    fs, root = storage.filesystem(source)
    if not fs.exists(root):
        raise DataError(f"{source}: no such folder")
    files = sorted(fs.find(root))
    local = storage.protocol_of(fs) in ("file", "local")
    uri = (lambda path: path) if local else fs.unstrip_protocol  # noqa: E731
    stems = {path[: -len(".npz")] for path in files if path.endswith(".npz")}
    videos = {path[: -len(".mp4")] for path in files if path.endswith(".mp4")}
    skipped = {uri(path): "neither NAME.npz nor NAME.mp4" for path in files if not path.endswith((".npz", ".mp4"))}
    orphans = sorted(videos - stems)
    if orphans:
        raise DataError(f"{uri(orphans[0])}.mp4: no {orphans[0].rsplit('/', 1)[-1]}.npz with its actions next to it")
    episodes = [
        SourceEpisode(id=stem[len(root) :].strip("/") or stem.rsplit("/", 1)[-1], npz=uri(stem + ".npz"), mp4=uri(stem + ".mp4") if stem in videos else None)
        for stem in sorted(stems)
    ]
    if not episodes:
        raise DataError(f"{source}: no episodes found (expected NAME.npz with video and actions, or NAME.mp4 + NAME.npz)"
                        + (f"; skipped {len(skipped)} other file(s), e.g. {next(iter(skipped))}" if skipped else ""))
    return episodes, skipped


def read_npz(uri: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise DataError(f"{uri}: not a readable .npz ({err})") from None


def read_mp4(uri: str) -> np.ndarray:
    """(t h w 3) uint8 frames of the first video stream."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb") as handle, av.open(handle) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise DataError(f"{uri}: cannot decode video ({err})") from None
    if not frames:
        raise DataError(f"{uri}: the video has no frames")
    return np.stack(frames)


def square(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop (t h w 3) frames to a square, then area-average to size x size."""
    t, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    frames = frames[:, top : top + side, left : left + side]
    if size is None or size == side:
        return np.ascontiguousarray(frames)
    if side % size == 0:
        factor = side // size
        return np.rint(reduce(frames.astype(np.float32), "t (h a) (w b) c -> t h w c", "mean", a=factor, b=factor)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(frame).resize((size, size), Image.BOX)) for frame in frames])


def load_episode(episode: SourceEpisode, size: int | None, action_map: Mapping[int, int]) -> dict[str, np.ndarray]:
    arrays = read_npz(episode.npz)
    if "actions" not in arrays:
        raise DataError(f"{episode.npz}: no 'actions' array (it has {sorted(arrays)})")
    if episode.mp4 is not None and "video" in arrays:
        raise DataError(f"{episode.npz}: holds a 'video' array and {episode.mp4} is next to it: which is the episode's "
                        "video is ambiguous; remove one of the two")
    if episode.mp4 is not None:
        video, where = read_mp4(episode.mp4), episode.mp4
    elif "video" in arrays:
        video, where = arrays["video"], episode.npz
    else:
        raise DataError(f"{episode.npz}: no 'video' array and no {episode.id}.mp4 next to it")
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise DataError(f"{where}: video is {video.dtype} {video.shape}, expected uint8 (T, H, W, 3)")
    actions = np.asarray(arrays["actions"])
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
        raise DataError(f"{episode.npz}: actions are {actions.dtype} {actions.shape}, expected integers (T,)")
    if len(actions) != len(video):
        raise DataError(f"{episode.npz}: {len(actions)} actions for {len(video)} frames in {where}; expected one action per frame")
    mapped = np.array([action_map.get(int(a), int(a)) for a in actions], np.int64) if action_map else actions.astype(np.int64)
    try:
        check_actions(mapped, episode.npz)
    except DataError as err:
        raise DataError(f"{err}; map source ids to these with --action-map SOURCE:TARGET,...") from None
    frames = square(video, size)
    return {"frames": frames, "actions": mapped.astype(np.int8), "pose": read_poses(arrays, len(frames), episode.npz)}


def read_poses(arrays: Mapping[str, np.ndarray], frames: int, where: str) -> np.ndarray:
    """The episode's (T 5) `poses` (NaN where unknown), or all NaN when it has none."""
    if "poses" not in arrays:
        return np.full((frames, len(POSE_FIELDS)), np.nan, np.float32)
    poses = np.asarray(arrays["poses"])
    if poses.shape != (frames, len(POSE_FIELDS)) or not np.issubdtype(poses.dtype, np.floating):
        raise DataError(f"{where}: poses are {poses.dtype} {poses.shape}, expected float ({frames}, {len(POSE_FIELDS)}) = {', '.join(POSE_FIELDS)} per frame")
    infinite = np.flatnonzero(np.isinf(poses).any(axis=1))
    if infinite.size:
        raise DataError(f"{where}: poses of {infinite.size} frame(s) are infinite (first: frame {infinite[0]}); "
                        "a pose is finite, or NaN where it is unknown")
    return poses.astype(np.float32)


def import_dataset(
    source: str,
    uri: str,
    *,
    size: int | None = None,
    action_map: Mapping[int, int] | None = None,
    split: SplitConfig | None = None,
    shard_frames: int = 2048,
    progress: Progress | None = None,
) -> Manifest:
    """Import every episode under `source` into a dataset at `uri` (atomically: a dataset already
    there stays readable until the new one is complete). Skipped files, empty splits and frames of
    unknown pose are reported as warnings."""
    episodes, skipped = find_episodes(source)
    for path, reason in skipped.items():
        log.warning("%s: skipped (%s)", path, reason)
    first = load_episode(episodes[0], size, action_map or {})
    side = first["frames"].shape[1]
    meta = {"source": "import", "import_uri": source, "action_map": {str(k): v for k, v in (action_map or {}).items()},
            "skipped_files": skipped}
    writer = DatasetWriter(uri, frame_columns(side), split=split, shard_frames=shard_frames, pose_known=False, meta=meta)
    with writer:
        for index, episode in enumerate(episodes):
            arrays = first if index == 0 else load_episode(episode, size, action_map or {})
            if arrays["frames"].shape[1] != side:
                raise DataError(f"{episode.mp4 or episode.npz}: frames are {arrays['frames'].shape[1]} pixels square after cropping, earlier episodes {side}; pass --size")
            writer.add(episode.id, arrays)
            writer.pose_known |= bool(np.isfinite(arrays["pose"]).all(axis=1).any())
            if progress:
                progress(index + 1, len(episodes))
    warn_about(writer.manifest, uri)
    return writer.manifest


def warn_about(manifest: Manifest, uri: str) -> None:
    """What an imported dataset lacks that later stages may need."""
    unknown, frames = manifest.pose_unknown_frames, manifest.frames
    if manifest.pose_known and unknown:
        log.warning("%s: %d of %d frames have no known camera pose (NaN, or no 'poses' in their .npz); they never count "
                    "as revisits or nearest views", uri, unknown, frames)
    empty = [split for split in SPLITS if not manifest.counts[split]]
    if empty:
        log.warning("%s: the %s split(s) came out empty (%d episodes; val %g, test %g); stages that need them will refuse "
                    "it: import more episodes or change the split", uri, " and ".join(empty), manifest.counts["episodes"],
                    manifest.split.val, manifest.split.test)
