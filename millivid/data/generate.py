"""Datasets rendered from the built-in block world: one seeded world and trajectory per episode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from millivid.data.columns import ACTION_NAMES, frame_columns
from millivid.data.config import DataConfig
from millivid.data.manifest import Manifest
from millivid.data.writer import DatasetWriter
from millivid.world.agent import Walker
from millivid.world.policies import trajectory
from millivid.world.render import Scene, render
from millivid.world.terrain import generate

Progress = Callable[[int, int], None]


def episode_id(index: int) -> str:
    return f"ep-{index:06d}"


def render_episode(cfg: DataConfig, index: int) -> dict[str, np.ndarray]:
    """Episode `index` of the dataset `cfg` describes: a pure function of (cfg, index)."""
    world = generate([cfg.seed, index], cfg.world)
    path = trajectory(Walker(world, cfg.world), np.random.default_rng([cfg.seed, index, 1]), cfg.frames, cfg.hold, cfg.policy, mix=cfg.mix)
    frames = render(Scene(world, cfg.world), path.pose, cfg.size)
    return {"frames": frames, "actions": path.actions, "pose": path.pose}


def world_meta(cfg: DataConfig) -> dict:
    return {
        "source": "world",
        "data": cfg.model_dump(mode="json"),
        "actions": list(ACTION_NAMES),
        "action_timing": "actions[i] moved the camera from frame i-1 to frame i",
        "pose": "x, y (eye height), z in blocks (not wrapped; the world repeats every map_size blocks), yaw and pitch in radians",
        "map_size": cfg.world.map_size,
    }


def render_dataset(cfg: DataConfig, uri: str, progress: Progress | None = None) -> Manifest:
    """Render `cfg.episodes` episodes into a dataset at `uri` (replacing what is there, atomically)."""
    writer = DatasetWriter(uri, frame_columns(cfg.size), split=cfg.split, shard_frames=cfg.shard_frames, meta=world_meta(cfg))
    with writer:
        for index in range(cfg.episodes):
            writer.add(episode_id(index), render_episode(cfg, index))
            if progress:
                progress(index + 1, cfg.episodes)
    return writer.manifest
