"""Rollout frames that revisit a camera pose seen in the context: where consistency means memory.

A rollout frame r revisits context frame c when its camera is within `radius` of c's position
and within `angle` degrees of c's yaw, the camera left c's neighbourhood somewhere between c and
r, and r is at least `min_gap` frames after c. The last two conditions keep out frames that
merely continue the end of the context or glance away and straight back: what copying recent
frames gets right is not memory.

    mask = revisit_mask(pose, context=64, radius=1.0, angle=30.0, min_gap=32)   # pose (t 3): x, z, yaw
    mask.shape == (t - 64,)
"""

from __future__ import annotations

import numpy as np
from einops import rearrange


def revisit_mask(pose: np.ndarray, context: int, radius: float, angle: float, min_gap: int = 1) -> np.ndarray:
    """pose: (t 3) x, z, yaw (radians) per frame of a window, NaN where unknown -> (t - context,) bool."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != 3:
        raise ValueError(f"pose must be (t 3) = x, z, yaw per frame, got shape {pose.shape}")
    if not 0 < context < len(pose):
        raise ValueError(f"context {context} must leave rollout frames in a window of {len(pose)} frames")
    near = same_view(pose, pose[:context], radius, angle)  # (t c): frame k sees context frame c's view
    later = rearrange(np.arange(len(pose)), "t -> t 1") > np.arange(context)
    known = rearrange(~np.isnan(pose).any(axis=1), "t -> t 1")
    left = ~near & later & known
    first_leave = np.where(left.any(axis=0), left.argmax(axis=0), len(pose))  # (c,)
    rollout = rearrange(np.arange(context, len(pose)), "r -> r 1")
    returned = near[context:] & (first_leave < rollout) & (rollout - np.arange(context) >= min_gap)
    return returned.any(axis=1)


def same_view(pose: np.ndarray, anchors: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """(t 3), (c 3) -> (t c) bool: position within `radius` and yaw within `angle` degrees; NaN never matches."""
    offset = rearrange(pose[:, :2], "t d -> t 1 d") - rearrange(anchors[:, :2], "c d -> 1 c d")
    distance = np.sqrt((offset**2).sum(axis=-1))
    turn = np.abs(wrap_angle(rearrange(pose[:, 2], "t -> t 1") - anchors[:, 2]))
    with np.errstate(invalid="ignore"):
        return (distance <= radius) & (turn <= np.deg2rad(angle))


def wrap_angle(radians: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return (radians + np.pi) % (2 * np.pi) - np.pi
