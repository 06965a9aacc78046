"""Block-world rendering speed per core, against ViZDoom's renderer measured in the same run.

`frames_per_s` is the headline: 64x64 frames on one thread (the renderer starts no other), timed
in this process's CPU seconds so that other jobs sharing the machine do not count against it;
`wall_frames_per_s_64` is the same run by the wall clock. Best of a few repeats.

`jit_first_call_s`: CPU seconds of the first renders in a fresh process, once with an empty numba
cache (the kernels compile) and once with the cache that run left (they load from disk).

`vizdoom`: ViZDoom (the optional extra `bench`) at its smallest resolution, 160x120 RGB24, window
hidden, one game tic per frame (game logic included), per map and walk: `random` (forward, turn
left or turn right at random: the player soon stands at a wall that fills the view, the cheapest
frames) and `turning` (turning in place at the start: the rooms in view). Its engine runs in a
child process, so it is timed in CPU seconds of this process and every process below it, read
from /proc (Linux). `vs_vizdoom_64` is the built-in world's 64x64 frames/s over ViZDoom's
fastest map and walk.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from millivid.world.agent import Walker
from millivid.world.config import WorldConfig
from millivid.world.policies import trajectory
from millivid.world.render import Scene, render
from millivid.world.terrain import generate

VIZDOOM_PIXELS = 160 * 120
# map name -> (IWAD in the vizdoom package, scenario WAD in its scenarios folder, map)
VIZDOOM_MAPS = {
    "freedoom2 MAP01": ("freedoom2.wad", None, "MAP01"),
    "basic.wad": (None, "basic.wad", "map01"),
}
# walk -> chance of each button (forward, turn left, turn right) being the frame's only one
VIZDOOM_WALKS = {"random": (1 / 3, 1 / 3, 1 / 3), "turning": (0, 1, 0)}
FIRST_CALLS = """
import json, math, time
import numpy as np
from millivid.pose import camera_pose
from millivid.world.config import WorldConfig
from millivid.world.render import Scene, render
from millivid.world.terrain import generate
cfg = WorldConfig()
scene = Scene(generate([0, 0], cfg), cfg)
pose = camera_pose(np.arange(8.0), 6.0, 3.0, 0.3, math.radians(cfg.pitch_degrees))
started = time.process_time()
for size in (64, 16):  # 16 is rendered at 64 and area-averaged: that kernel compiles too
    render(scene, pose, size)
print(json.dumps(time.process_time() - started))
"""


def best_seconds(fn, repeats: int, clock=time.process_time) -> float:
    times = []
    for _ in range(repeats):
        started = clock()
        fn()
        times.append(clock() - started)
    return min(times)


def run(quick: bool = False) -> dict:
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
    result["pixels_per_s_64"] = round(result["frames_per_s_64"] * 64 * 64)
    wall = best_seconds(lambda: render(scene, path.pose, 64), repeats, clock=time.perf_counter)
    result["wall_frames_per_s_64"] = round(frames / wall, 1)
    result["world_ms"] = round(1e3 * best_seconds(lambda: generate([0, 1], cfg), repeats), 2)
    result["scene_ms"] = round(1e3 * best_seconds(lambda: Scene(world, cfg), repeats), 2)
    result["trajectory_us_per_frame"] = round(1e6 * best_seconds(lambda: trajectory(walker, np.random.default_rng(1), frames, hold=3), repeats) / frames, 2)
    result["jit_first_call_s"] = first_call_seconds()
    result["vizdoom"] = vizdoom_speed(2_000 if quick else 6_000, repeats)
    if "maps" in result["vizdoom"]:
        fastest = max(walk["frames_per_s"] for walks in result["vizdoom"]["maps"].values() for walk in walks.values())
        result["vs_vizdoom_64"] = round(result["frames_per_s_64"] / fastest, 2)
    return result


def first_call_seconds() -> dict:
    """CPU seconds of a fresh process's first renders: numba compiling, then loading its cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        compiled, cached = (run_python(FIRST_CALLS, env) for _ in range(2))
    return {"compile": round(compiled, 2), "from_cache": round(cached, 2)}


def run_python(code: str, env: dict) -> float:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def vizdoom_speed(frames: int, repeats: int) -> dict:
    """ViZDoom's frames per CPU second of the process tree for each map and walk."""
    try:
        import vizdoom
    except ImportError:
        return {"skipped": "not installed"}
    maps = {}
    for name, wads in VIZDOOM_MAPS.items():
        maps[name] = {}
        for walk, chances in VIZDOOM_WALKS.items():
            with tempfile.TemporaryDirectory() as folder:
                game = doom_game(vizdoom, folder, *wads)
                try:
                    maps[name][walk] = doom_speed(game, chances, frames, repeats)
                finally:
                    game.close()
    settings = {"resolution": "160x120", "format": "RGB24", "window": "hidden", "frames": frames}
    return {"version": vizdoom.__version__, **settings, "maps": maps}


def doom_game(vizdoom, folder: str, iwad: str | None, scenario: str | None, map_name: str):
    game = vizdoom.DoomGame()
    if iwad:
        game.set_doom_game_path(os.path.join(os.path.dirname(vizdoom.__file__), iwad))
    if scenario:
        game.set_doom_scenario_path(os.path.join(vizdoom.scenarios_path, scenario))
    game.set_doom_map(map_name)
    game.set_doom_config_path(os.path.join(folder, "_vizdoom.ini"))
    game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
    game.set_screen_format(vizdoom.ScreenFormat.RGB24)
    game.set_window_visible(False)
    game.set_available_buttons([vizdoom.Button.MOVE_FORWARD, vizdoom.Button.TURN_LEFT, vizdoom.Button.TURN_RIGHT])
    with contextlib.chdir(folder):  # the engine keeps its files in ./_vizdoom
        game.init()
    return game


def doom_speed(game, chances: tuple[float, ...], frames: int, repeats: int) -> dict:
    """Best of `repeats` runs of `frames` frames from the start, by CPU seconds of the process tree."""
    rng = np.random.default_rng(0)
    game.new_episode()
    walk(game, chances, rng, 100)  # past the engine's start-up
    runs = []
    for _ in range(repeats):
        tree, own, wall = tree_cpu_seconds(), time.process_time(), time.perf_counter()
        restarts = walk(game, chances, rng, frames)
        runs.append((tree_cpu_seconds() - tree, time.process_time() - own, time.perf_counter() - wall, restarts))
    tree, own, wall, restarts = min(runs)
    return {
        "frames_per_s": round(frames / tree, 1),
        "pixels_per_s": round(frames * VIZDOOM_PIXELS / tree),
        "engine_cpu_share": round(1 - own / tree, 3),  # what this process alone would not have counted
        "wall_frames_per_s": round(frames / wall, 1),
        "episodes_restarted": restarts,
    }


def walk(game, chances: tuple[float, ...], rng: np.random.Generator, frames: int) -> int:
    """`frames` frames; returns how many episodes ended meanwhile (the player died, say)."""
    buttons = np.eye(len(chances), dtype=int).tolist()
    pressed = rng.choice(len(chances), size=frames, p=chances).tolist()  # drawn up front: not timed per frame
    restarts = rendered = taken = 0
    while rendered < frames:
        if game.is_episode_finished():
            game.new_episode()
            restarts += 1
        game.make_action(buttons[pressed[taken % frames]])
        taken += 1
        if game.get_state() is not None:  # the frame, copied out of the engine; None if the episode ended
            rendered += 1
    return restarts


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU seconds of process `root` (default: this one) and every process below it,
    from /proc.

    Children that ended and were waited for count through their parent's cutime/cstime, so the
    total never drops when a process in the tree exits.
    """
    parent, seconds = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # ended meanwhile
            continue
        parent[int(entry)] = int(fields[1])
        seconds[int(entry)] = sum(int(ticks) for ticks in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    tree = {os.getpid() if root is None else root}
    while grown := {pid for pid, ppid in parent.items() if ppid in tree} - tree:
        tree |= grown
    return sum(seconds[pid] for pid in tree if pid in seconds)
