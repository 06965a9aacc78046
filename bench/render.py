"""Block-world rendering speed: frames per second on one core, and what an episode costs besides.

`frames_per_s` is the headline: 64x64 frames on one thread (numpy's element-wise work is
single-threaded anyway), timed in this process's CPU seconds so that other jobs sharing the
machine do not count against it; `wall_frames_per_s_64` is the same run by the wall clock.
Best of a few repeats.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from millivid.world.agent import Walker
from millivid.world.config import WorldConfig
from millivid.world.policies import trajectory
from millivid.world.render import Scene, render
from millivid.world.terrain import generate


def best_seconds(fn, repeats: int, clock=time.process_time) -> float:
    times = []
    for _ in range(repeats):
        started = clock()
        fn()
        times.append(clock() - started)
    return min(times)


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    frames, repeats = (256, 2) if quick else (2048, 3)
    cfg = WorldConfig()
    world = generate([0, 0], cfg)
    walker = Walker(world, cfg)
    path = trajectory(walker, np.random.default_rng(0), frames, hold=3)
    scene = Scene(world, cfg)
    result: dict = {"benchmark": "render", "frames": frames, "threads": 1}
    for size in (64, 32, 16, 128):
        render(scene, path.pose[:32], size)  # colour tables for this size
        seconds = best_seconds(lambda size=size: render(scene, path.pose, size), repeats)
        result[f"frames_per_s_{size}"] = round(frames / seconds, 1)
        result[f"render_scale_{size}"] = cfg.render_scale(size)
    result["frames_per_s"] = result["frames_per_s_64"]
    wall = best_seconds(lambda: render(scene, path.pose, 64), repeats, clock=time.perf_counter)
    result["wall_frames_per_s_64"] = round(frames / wall, 1)
    result["world_ms"] = round(1e3 * best_seconds(lambda: generate([0, 1], cfg), repeats), 2)
    result["scene_ms"] = round(1e3 * best_seconds(lambda: Scene(world, cfg), repeats), 2)
    result["trajectory_us_per_frame"] = round(1e6 * best_seconds(lambda: trajectory(walker, np.random.default_rng(1), frames, hold=3), repeats) / frames, 2)
    return result
