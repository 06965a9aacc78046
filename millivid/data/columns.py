"""Named array columns of an episode: per-frame dtype and shape, and checks of arrays against them.

An episode is a dict of arrays that share their first axis, time:
    frames   (t h w 3) uint8       pixels
    actions  (t,)      int8        0 forward, 1 turn left, 2 turn right
    pose     (t 5)     float32     camera x, y, z, yaw, pitch per frame (millivid.pose); NaN when unknown
    latent_l (t n_l c) float16     the autoencoder's level-l tokens (written by the encode stage)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pydantic import Field, field_validator

from millivid.pose import POSE_FIELDS
from millivid.schema import Frozen

ACTION_NAMES = ("forward", "turn left", "turn right")


class DataError(ValueError):
    """Bad dataset input or contents; the message names the file or field and the problem."""


class ColumnSpec(Frozen):
    dtype: str = Field(description="numpy dtype name, e.g. uint8, float16")
    shape: tuple[int, ...] = Field((), description="shape of one frame's value")

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        try:
            return np.dtype(dtype).name
        except TypeError as err:
            raise ValueError(f"unknown numpy dtype {dtype!r}") from err

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def frame_bytes(self) -> int:
        return self.numpy_dtype.itemsize * math.prod(self.shape)


def frame_columns(height: int, width: int | None = None) -> dict[str, ColumnSpec]:
    """The columns of a rendered or imported video dataset."""
    return {
        "frames": ColumnSpec(dtype="uint8", shape=(height, width or height, 3)),
        "actions": ColumnSpec(dtype="int8"),
        "pose": ColumnSpec(dtype="float32", shape=(len(POSE_FIELDS),)),
    }


def episode_length(episode: Mapping[str, np.ndarray], columns: Mapping[str, ColumnSpec], where: str) -> int:
    """Check `episode` holds exactly `columns` with the right dtypes and shapes; return its frame count."""
    missing = sorted(set(columns) - set(episode))
    extra = sorted(set(episode) - set(columns))
    if missing or extra:
        raise DataError(f"{where}: columns {sorted(episode)} do not match the dataset's {sorted(columns)}")
    lengths = {}
    for name, spec in columns.items():
        array = np.asarray(episode[name])
        if array.dtype != spec.numpy_dtype:
            raise DataError(f"{where}: column '{name}' has dtype {array.dtype}, expected {spec.dtype}")
        if array.shape[1:] != spec.shape or array.ndim != len(spec.shape) + 1:
            raise DataError(f"{where}: column '{name}' has shape {array.shape}, expected (t, {', '.join(map(str, spec.shape))})")
        lengths[name] = array.shape[0]
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise DataError(f"{where}: columns differ in length ({shown}); every column needs one value per frame")
    length = next(iter(lengths.values()), 0)
    if length == 0:
        raise DataError(f"{where}: episode has no frames")
    if "actions" in episode:
        check_actions(episode["actions"], where)
    return length


def check_actions(actions: np.ndarray, where: str) -> None:
    unknown = np.setdiff1d(np.unique(actions), np.arange(len(ACTION_NAMES)))
    if unknown.size:
        valid = ", ".join(f"{i} {name}" for i, name in enumerate(ACTION_NAMES))
        raise DataError(f"{where}: unknown action ids {unknown.tolist()} (valid: {valid})")
