"""Camera pose per frame: position (x, y, z) and orientation (yaw, pitch), as the data stores it.

    pose: (t 5) float32 = x, y, z, yaw, pitch     # blocks; y is the eye height; radians
    camera_pose(x, y, z, yaw, pitch)               # -> (t 5), scalars broadcast
    positions(pose)  -> (t 3)                      # x, y, z
    directions(pose) -> (t 3)                      # unit view vectors
    view_distance(pose, anchors) -> (t c) metres, (t c) radians between views

The ground plane is (x, z); yaw turns from +x towards +z, pitch tilts up (negative looks down).
A NaN pose means unknown (imported data without poses) and is never close to anything.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

POSE_FIELDS = ("x", "y", "z", "yaw", "pitch")
X, Y, Z, YAW, PITCH = range(len(POSE_FIELDS))


def camera_pose(x, y, z, yaw, pitch) -> np.ndarray:
    """Stack per-frame (or scalar) components into a (t 5) float32 pose array."""
    parts = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (x, y, z, yaw, pitch)))
    return np.stack(parts, axis=-1).astype(np.float32).reshape(-1, len(POSE_FIELDS))


def check_pose(pose: np.ndarray, where: str = "pose") -> np.ndarray:
    pose = np.asarray(pose)
    if pose.ndim != 2 or pose.shape[1] != len(POSE_FIELDS):
        raise ValueError(f"{where} must be (t {len(POSE_FIELDS)}) = {', '.join(POSE_FIELDS)} per frame, got shape {pose.shape}")
    return pose


def positions(pose: np.ndarray) -> np.ndarray:
    return check_pose(pose)[:, X : Z + 1]


def directions(pose: np.ndarray) -> np.ndarray:
    """(t 3) unit view vectors (x, y, z) from yaw and pitch."""
    yaw, pitch = check_pose(pose)[:, YAW].astype(np.float64), pose[:, PITCH].astype(np.float64)
    return np.stack([np.cos(pitch) * np.cos(yaw), np.sin(pitch), np.cos(pitch) * np.sin(yaw)], axis=-1)


def view_distance(pose: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t 5), (c 5) -> (t c) distance between cameras and (t c) angle between their views, radians."""
    offset = rearrange(positions(pose).astype(np.float64), "t d -> t 1 d") - rearrange(positions(anchors).astype(np.float64), "c d -> 1 c d")
    cosine = np.einsum("td,cd->tc", directions(pose), directions(anchors))
    return np.sqrt((offset**2).sum(axis=-1)), np.arccos(np.clip(cosine, -1.0, 1.0))


def known(pose: np.ndarray) -> np.ndarray:
    """(t,) True where every component of the pose is known."""
    return ~np.isnan(check_pose(pose)).any(axis=1)
