"""Rollout frames that revisit a camera pose seen in the context: where consistency means memory.

A rollout frame r revisits context frame c when its camera is within `radius` of c's position
and its view within `angle` degrees of c's view (yaw and pitch), the camera left c's neighbourhood somewhere between c and
r, and r is at least `min_gap` frames after c. The last two conditions keep out frames that
merely continue the end of the context or glance away and straight back: what copying recent
frames gets right is not memory.

    mask = revisit_mask(pose, context=64, radius=1.0, angle=30.0, min_gap=32)   # pose (t 5), see millivid.pose
    mask.shape == (t - 64,)

clip_revisit_share applies the same rule to training clips: how often a clip's later frames
revisit its first frames, i.e. how often training shows the model a use for its memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange

from millivid.data.clips import ClipLoader
from millivid.data.columns import DataError
from millivid.data.manifest import Split
from millivid.data.reader import Dataset
from millivid.pose import check_pose, known, view_distance


@dataclass(frozen=True)
class RevisitShare:
    """Revisits in a sample of training clips (see clip_revisit_share)."""

    clips: int  # clips drawn
    with_revisit: int  # clips where some frame after the context revisits a context frame
    share: float  # with_revisit / clips
    revisit_frames_share: float  # mean over clips of the fraction of post-context frames that revisit


def revisit_mask(pose: np.ndarray, context: int, radius: float, angle: float, min_gap: int = 1) -> np.ndarray:
    """pose: (t 5) camera pose per frame of a window, NaN where unknown -> (t - context,) bool."""
    return revisit_pairs(pose, context, radius, angle, min_gap)[0].any(axis=1)


def revisited_frames(pose: np.ndarray, context: int, radius: float, angle: float, min_gap: int = 1) -> np.ndarray:
    """(t - context,) int: for each rollout frame the context frame it revisits (the nearest view
    among those that qualify), or -1."""
    pairs, score = revisit_pairs(pose, context, radius, angle, min_gap)
    return np.where(pairs.any(axis=1), score.argmin(axis=1), -1)


def revisit_pairs(pose: np.ndarray, context: int, radius: float, angle: float, min_gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(t - context, context) bool: every context frame each rollout frame revisits (a view seen
    again may have been seen several times), and the (t - context, context) closeness of each pair
    (inf where it is not one)."""
    pose = window(pose, context)
    distance, turn = view_distance(pose, pose[:context])  # (t c)
    with np.errstate(invalid="ignore"):
        near = (distance <= radius) & (turn <= np.deg2rad(angle))  # frame k sees context frame c's view; NaN never
    later = rearrange(np.arange(len(pose)), "t -> t 1") > np.arange(context)
    left = ~near & later & rearrange(known(pose), "t -> t 1")
    first_leave = np.where(left.any(axis=0), left.argmax(axis=0), len(pose))  # (c,)
    rollout = rearrange(np.arange(context, len(pose)), "r -> r 1")
    returned = near[context:] & (first_leave < rollout) & (rollout - np.arange(context) >= min_gap)
    return returned, np.where(returned, closeness(distance[context:], turn[context:], radius, angle), np.inf)


def nearest_context_frames(pose: np.ndarray, context: int, radius: float, angle: float) -> np.ndarray:
    """(t - context,) int: for each rollout frame the context frame whose view is closest
    (distance in units of `radius` plus view angle in units of `angle` degrees), or -1 where
    the pose is unknown."""
    pose = window(pose, context)
    distance, turn = view_distance(pose[context:], pose[:context])  # (r c)
    score = np.nan_to_num(closeness(distance, turn, radius, angle), nan=np.inf)
    return np.where(np.isfinite(score).any(axis=1), score.argmin(axis=1), -1)


def clip_revisit_share(
    dataset: Dataset,
    split: Split,
    span: int,
    context: int,
    radius: float,
    angle: float,
    min_gap: int,
    clips: int = 512,
    seed: int = 0,
) -> RevisitShare:
    """How many of `split`'s training clips revisit their own context, by revisit_mask's rule.

    A clip is `span` consecutive frames of one episode, its first `context` frames the context;
    its (span 5) pose (x, y, z in world units, i.e. blocks; yaw, pitch in radians) gives a
    (span - context,) revisit mask. `clips` starts are drawn from `seed` as training draws them:
    uniformly, with replacement, over every (episode, start) of the split that leaves `span` frames.
    radius: world units; angle: degrees between views; min_gap: frames from a context frame to
    its revisit. Frames of unknown (NaN) pose never revisit.
    """
    if not 0 < context < span:
        raise ValueError(f"{dataset.uri}: context {context} must be in 1..{span - 1} for clips of {span} frames")
    if clips < 1:
        raise ValueError(f"{dataset.uri}: clips must be >= 1, got {clips}")
    if "pose" not in dataset.columns:
        raise DataError(f"{dataset.uri}: counting revisits needs a 'pose' column; the dataset has {list(dataset.columns)}")
    positions = ClipLoader(dataset, span, clips, split=split, columns=["pose"]).positions(np.random.default_rng(seed), clips)
    poses = {episode: dataset.read(episode, columns=["pose"])["pose"] for episode in sorted({e for e, _ in positions})}
    masks = np.stack([revisit_mask(poses[e][start : start + span], context, radius, angle, min_gap) for e, start in positions])
    with_revisit = int(masks.any(axis=1).sum())
    return RevisitShare(clips, with_revisit, with_revisit / clips, float(masks.mean()))


def window(pose: np.ndarray, context: int) -> np.ndarray:
    """A window's (t 5) poses as float64, checked to hold `context` frames and at least one more."""
    pose = check_pose(np.asarray(pose, dtype=np.float64))
    if not 0 < context < len(pose):
        raise ValueError(f"context {context} must leave rollout frames in a window of {len(pose)} frames")
    return pose


def closeness(distance: np.ndarray, turn: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """How far apart two views are, in units of the revisit thresholds (<= 2 for every revisit)."""
    return distance / radius + turn / np.deg2rad(angle)
