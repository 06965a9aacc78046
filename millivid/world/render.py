"""First-person frames of a World: a column ray caster over the block heightmap, compiled by numba.

For every screen column (a ray in the ground plane) a 2-D DDA walks the cells the ray crosses,
nearest first. Every block column stands on the ground, so the screen rows a cell covers run
from the rows nearer cells already cover up to its silhouette top; the walk stops once the
column is full or the fog hides everything further, and the rows left over show the sky. A
pixel then needs only its hit point (side face: where the ray enters the cell; top face: where
it drops to the column's top) to find its texel, and one lookup in a colour table that already
holds lighting, mip level and fog per distance.

The arithmetic is float32 (the DDA's crossing depths float64) in the same order as the numpy
renderer this replaced, so frames are bit-identical to it; the per-frame sines and cosines stay
in numpy because numba's differ from numpy's in the last bit for some angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from einops import rearrange

from millivid.pose import PITCH, YAW, X, Y, Z, check_pose
from millivid.world.blocks import DISTANCE_LEVELS, FACES, TEXELS, Block, colour_table
from millivid.world.config import WorldConfig
from millivid.world.sky import AZIMUTH_BINS, azimuth_bin, elevation_bin, panorama
from millivid.world.terrain import MAX_HEIGHT, World

# float32 constants: a Python float would make numba compute in float64. Numba's cache keeps the
# globals a kernel read when it was compiled and notices changes to this file only, so the kernels
# take the texture and world layout (TEXELS, MAX_HEIGHT, ...) from their arrays' shapes instead.
FAR_AWAY, HALF, NEAREST = np.float32(1e30), np.float32(0.5), np.float32(1e-4)


@dataclass(frozen=True)
class Optics:
    """What depends on the rendered resolution only."""

    res: int
    focal: np.float32  # pixels
    horizon: np.float32  # screen row (from the bottom) of the horizon
    ndc: np.ndarray  # (w,) ray direction across the screen, at unit depth
    slope: np.ndarray  # (h,) world height per unit depth of each row, bottom row first
    colours: np.ndarray  # (distance, block*face, v, u, rgba) uint8 view of blocks.colour_table
    sky_rows: np.ndarray  # (w h) int64 panorama offset of each pixel's elevation
    sky_columns: np.ndarray  # (w,) int64 azimuth bin of each column relative to the yaw


class Scene:
    """A World prepared for rendering: per-cell arrays flattened to index z * n + x."""

    def __init__(self, world: World, cfg: WorldConfig):
        self.world, self.cfg = world, cfg
        self.height = rearrange(world.height.astype(np.float32), "z x -> (z x)")
        # colour-table face row of each layer's block (its top face; + 1, + 2: its sides)
        self.faces = rearrange(column_blocks(world) * FACES, "z x layer -> (z x) layer").astype(np.int32)
        self.sky = rearrange(panorama().view(np.uint8), "(p c) -> p c", c=4)
        self._optics: dict[int, Optics] = {}

    def optics(self, res: int) -> Optics:
        if res not in self._optics:
            self._optics[res] = make_optics(self.cfg, res)
        return self._optics[res]


def column_blocks(world: World) -> np.ndarray:
    """(n n MAX_HEIGHT) block of each layer of each column, counting down from its top block."""
    layer = np.arange(MAX_HEIGHT)[None, None]
    cap = world.cap[..., None]
    below = np.where(layer < cap + 3, world.body[..., None], Block.STONE)
    return np.where(layer < cap, world.top[..., None], below).astype(np.int32)


def make_optics(cfg: WorldConfig, res: int) -> Optics:
    tan_half = math.tan(math.radians(cfg.fov_degrees) / 2)
    focal = res / 2 / tan_half
    horizon = res / 2 - focal * math.tan(math.radians(cfg.pitch_degrees))
    ndc = ((2 * (np.arange(res) + 0.5) / res - 1) * tan_half).astype(np.float32)
    slope = ((np.arange(res) + 0.5 - horizon) / focal).astype(np.float32)
    elevation = np.arctan(slope[None, :] / np.hypot(1, ndc)[:, None])
    colours = colour_table(focal, cfg.view_distance).view(np.uint8)  # packed little-endian r, g, b, a
    return Optics(
        res=res,
        focal=np.float32(focal),
        horizon=np.float32(horizon),
        ndc=ndc,
        slope=slope,
        colours=rearrange(colours, "(d f v u c) -> d f v u c", d=DISTANCE_LEVELS, f=len(Block) * FACES, v=TEXELS, u=TEXELS),
        sky_rows=elevation_bin(elevation).astype(np.int64) * AZIMUTH_BINS,
        sky_columns=azimuth_bin(np.arctan(ndc)),
    )


def render(scene: Scene, pose: np.ndarray, size: int, chunk: int = 32) -> np.ndarray:
    """(t size size 3) uint8 frames seen from camera poses (t 5: x, y, z, yaw, pitch; see millivid.pose).

    The camera tilt is part of the optics, so every pose's pitch must be the world config's."""
    check_pose(pose, "render pose")
    if not np.isfinite(pose).all():
        raise ValueError("render pose: every component must be finite")
    if not np.allclose(pose[:, PITCH], math.radians(scene.cfg.pitch_degrees), atol=1e-5):
        raise ValueError(f"render pose: pitch must be the world's pitch_degrees={scene.cfg.pitch_degrees} for every frame")
    scale = scene.cfg.render_scale(size)
    frames = np.empty((len(pose), size, size, 3), np.uint8)
    image = np.empty((min(chunk, len(pose)), size * scale, size * scale, 3), np.uint8) if scale > 1 else None
    for start in range(0, len(pose), chunk):
        part = slice(start, start + chunk)
        camera = pose[part]
        target = frames[part] if image is None else image[: len(camera)]
        render_chunk(scene, camera[:, X], camera[:, Z], camera[:, YAW], camera[:, Y], target)
        if image is not None:
            area_average(target, scale, frames[part])
    return frames


@numba.njit(cache=True, nogil=True)
def area_average(image: np.ndarray, scale: int, out: np.ndarray) -> None:
    """(b h*scale w*scale 3) uint8 -> out (b h w 3) uint8, each pixel the rounded mean of its block."""
    area, width = scale * scale, out.shape[2]
    total = np.empty(3 * width, np.int32)  # one output row, summed over the image rows it covers
    for b in range(out.shape[0]):
        for i in range(out.shape[1]):
            total[:] = 0
            for s in range(i * scale, (i + 1) * scale):  # image rows in memory order
                row = image[b, s].reshape(-1)
                for j in range(width):
                    for t in range(j * scale, (j + 1) * scale):
                        for channel in range(3):  # a constant trip count, which the compiler unrolls
                            total[3 * j + channel] += row[3 * t + channel]
            mean = out[b, i].reshape(-1)
            for k in range(3 * width):
                mean[k] = (total[k] + area // 2) // area


def render_chunk(scene: Scene, x: np.ndarray, z: np.ndarray, yaw: np.ndarray, eye: np.ndarray, out: np.ndarray) -> None:
    """Fill out (b res res 3) uint8 with the frames of b cameras at (x, eye, z) looking along yaw; all (b,)."""
    optics, far = scene.optics(out.shape[1]), np.float32(scene.cfg.view_distance)
    x, z, yaw, eye = (v.astype(np.float32) for v in (x, z, yaw, eye))
    cos, sin = np.cos(yaw), np.sin(yaw)
    # one ray per (frame, screen column), direction at unit depth (so depth is distance along it: no fisheye)
    dir_x = cos[:, None] - optics.ndc[None] * sin[:, None]
    dir_z = sin[:, None] + optics.ndc[None] * cos[:, None]
    # One crossing budget for the whole chunk: the numpy renderer showed the sky in place of a
    # ray's last budgeted cell, so the budget is part of what a frame looks like.
    steps = int(np.ceil(far * (np.abs(dir_x) + np.abs(dir_z)).max())) + 2
    azimuth = (azimuth_bin(yaw)[:, None] + optics.sky_columns[None]) % AZIMUTH_BINS
    camera = (x, z, eye, dir_x, dir_z, azimuth)
    lens = (optics.horizon, optics.focal, optics.slope, optics.sky_rows)
    world = (scene.height, scene.faces, scene.world.size, far, DISTANCE_LEVELS / far, steps)
    cast_rays(out, camera, lens, world, optics.colours, scene.sky)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def cast_rays(out, camera, lens, world, colours, sky) -> None:
    """Every frame b, screen column w: draw the cells its ray crosses, then the sky above them."""
    x, z, eye, dir_x, dir_z, azimuth = camera
    horizon, focal, slope, sky_rows = lens
    res = out.shape[1]
    for b in range(out.shape[0]):
        for w in range(res):
            column = out[b, ::-1, w]  # rows bottom up
            ray = (x[b], z[b], eye[b], dir_x[b, w], dir_z[b, w])
            covered = march(column, ray, horizon, focal, slope, world, colours)
            for row in range(covered, res):
                entry = sky_rows[w, row] + azimuth[b, w]
                for channel in range(3):
                    column[row, channel] = sky[entry, channel]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def march(column, ray, horizon, focal, slope, world, colours) -> int:
    """2-D DDA over the wrapping grid, nearest cell first, drawing each cell's newly covered rows
    into `column`; returns how many rows (from the bottom) the cells cover."""
    origin_x, origin_z, eye, dir_x, dir_z = ray
    height, faces, n, far, distance_scale, steps = world
    res, last_level, texels = len(column), np.float32(colours.shape[0] - 1), colours.shape[3]
    wrap_x, step_x, inv_x, next_x = first_crossing(origin_x, dir_x, n)
    wrap_z, step_z, inv_z, next_z = first_crossing(origin_z, dir_z, n)
    t_in, x_face, covered = np.float32(0), False, 0
    for _ in range(steps - 1):  # the last budgeted crossing is the sky's
        if t_in >= far or covered == res:
            break
        cell = wrap_z * n + wrap_x
        t_out = np.float32(min(next_x, next_z))
        rise = height[cell] - eye  # column top above the eye
        top_row = horizon + focal * rise / max(t_in if rise > 0 else t_out, NEAREST)
        top = np.int32(min(max(np.ceil(top_row - HALF), np.float32(0)), np.float32(res)))
        if top > covered:
            distance = np.int32(min(t_in * distance_scale, last_level))
            side, layers = side_texel(ray, t_in, x_face, texels), faces[cell]
            for row in range(covered, top):
                face, v, u = texel(ray, rise, t_in, slope[row], side, layers, texels)
                for channel in range(3):
                    column[row, channel] = colours[distance, face, v, u, channel]
            covered = top
        x_face = next_x < next_z
        if x_face:
            wrap_x = wrapped(wrap_x + step_x, n)
            next_x += inv_x
        else:
            wrap_z = wrapped(wrap_z + step_z, n)
            next_z += inv_z
        t_in = t_out
    return covered


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def first_crossing(origin, direction, n):
    """One axis of the DDA: wrapped cell, step, depth per cell and depth of the first grid line.

    Crossing depths are float64 (numpy promoted the int32 cell and float32 origin to it) and
    accumulate by repeated addition; cells see them rounded to float32."""
    cell = np.int32(np.floor(origin))
    inv = np.float64(min(np.float32(1) / abs(direction), FAR_AWAY))
    if direction > 0:
        return cell % n, 1, inv, (np.float64(cell + 1) - origin) * inv
    return cell % n, -1, inv, (origin - np.float64(cell)) * inv


@numba.njit(cache=True, nogil=True, inline="always")
def wrapped(cell, n):
    """A cell index one step outside 0..n-1 brought back in, without a division."""
    return 0 if cell == n else n - 1 if cell < 0 else cell


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def side_texel(ray, t_in, x_face, texels):
    """Face (1: x-facing side, 2: z-facing) and texel column where the ray enters a cell."""
    origin_x, origin_z, _, dir_x, dir_z = ray
    entry = origin_z + dir_z * t_in if x_face else origin_x + dir_x * t_in
    return (1 if x_face else 2), np.int32(np.floor(entry * np.float32(texels))) & (texels - 1)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def texel(ray, rise, t_in, slope, side, layers, texels):
    """Colour-table face row, texel row and texel column of the pixel whose ray row has `slope`,
    in a cell whose column top is `rise` above the eye and whose layers' face rows are `layers`."""
    origin_x, origin_z, _, dir_x, dir_z = ray
    face, side_u = side
    scale, mask = np.float32(texels), texels - 1
    below_top = rise - slope * t_in  # column top minus ray height where the ray enters the cell
    if below_top >= 0:  # side face, `below_top` blocks under the column's top
        layer = np.int32(min(below_top, np.float32(len(layers) - 1)))  # clamped before the cast: in range
        return layers[layer] + face, np.int32(below_top * scale) & mask, side_u
    t_top = rise / slope  # depth where the ray drops to the column top
    u = np.int32(np.floor((origin_x + dir_x * t_top) * scale)) & mask
    v = np.int32(np.floor((origin_z + dir_z * t_top) * scale)) & mask
    return layers[0], v, u
