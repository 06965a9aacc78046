"""First-person frames of a World: a vectorised column ray caster over the block heightmap.

For every screen column (a ray in the ground plane) a 2-D DDA lists the cells the ray crosses.
Every block column stands on the ground, so the screen rows a cell covers run from the rows
nearer cells already cover up to its silhouette top: a running maximum of the tops says how
many rows each cell newly covers, and `np.repeat` turns that into a cell index per pixel. A
pixel then needs only its hit point (side face: where the ray enters the cell; top face: where
it drops to the column's top) to find its texel, and one lookup in a colour table that already
holds lighting, mip level and fog per distance. Many frames are rendered at once, so every
numpy call works on large arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from einops import rearrange, repeat

from millivid.pose import PITCH, YAW, X, Y, Z, check_pose
from millivid.world.blocks import DISTANCE_LEVELS, FACES, TEXELS, Block, colour_table, unpack_rgb
from millivid.world.config import WorldConfig
from millivid.world.sky import AZIMUTH_BINS, azimuth_bin, elevation_bin, panorama
from millivid.world.terrain import MAX_HEIGHT, World

FAR_AWAY = np.float32(1e30)
FACE_TEXELS = FACES * TEXELS * TEXELS  # colour-table stride of one block


@dataclass(frozen=True)
class Optics:
    """What depends on the rendered resolution only."""

    res: int
    focal: float  # pixels
    horizon: float  # screen row (from the bottom) of the horizon
    ndc: np.ndarray  # (w,) ray direction across the screen, at unit depth
    slope: np.ndarray  # (h,) world height per unit depth of each row, bottom row first
    colours: np.ndarray  # packed colour table (see blocks.colour_table)
    sky_rows: np.ndarray  # (w h) int64 panorama offset of each pixel's elevation
    sky_columns: np.ndarray  # (w,) int64 azimuth bin of each column relative to the yaw


class Scene:
    """A World prepared for rendering: per-cell arrays flattened to index z * n + x."""

    def __init__(self, world: World, cfg: WorldConfig):
        self.world, self.cfg = world, cfg
        self.height = rearrange(world.height.astype(np.float32), "z x -> (z x)")
        self.block_offset = rearrange(column_blocks(world) * FACE_TEXELS, "z x layer -> (z x layer)").astype(np.int32)
        self.sky = panorama()
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
    return Optics(
        res=res,
        focal=focal,
        horizon=horizon,
        ndc=ndc,
        slope=slope,
        colours=colour_table(focal, cfg.view_distance),
        sky_rows=elevation_bin(elevation).astype(np.int64) * AZIMUTH_BINS,
        sky_columns=azimuth_bin(np.arctan(ndc)),
    )


def render(scene: Scene, pose: np.ndarray, size: int, chunk: int = 32) -> np.ndarray:
    """(t size size 3) uint8 frames seen from camera poses (t 5: x, y, z, yaw, pitch; see millivid.pose).

    The camera tilt is part of the optics, so every pose's pitch must be the world config's."""
    check_pose(pose, "render pose")
    if not np.allclose(pose[:, PITCH], math.radians(scene.cfg.pitch_degrees), atol=1e-5):
        raise ValueError(f"render pose: pitch must be the world's pitch_degrees={scene.cfg.pitch_degrees} for every frame")
    scale = scene.cfg.render_scale(size)
    frames = np.empty((len(pose), size, size, 3), np.uint8)
    for start in range(0, len(pose), chunk):
        part = slice(start, start + chunk)
        image = render_chunk(scene, pose[part, X], pose[part, Z], pose[part, YAW], pose[part, Y], size * scale)
        frames[part] = area_average(image, scale) if scale > 1 else image
    return frames


def area_average(image: np.ndarray, scale: int) -> np.ndarray:
    """(b h*scale w*scale c) uint8 -> (b h w c) uint8, each pixel the rounded mean of its block."""
    total = rearrange(image, "b (h s) (w t) c -> b h w c (s t)", s=scale, t=scale).sum(axis=-1, dtype=np.uint32)
    return ((total + scale * scale // 2) // (scale * scale)).astype(np.uint8)


def render_chunk(scene: Scene, x: np.ndarray, z: np.ndarray, yaw: np.ndarray, eye: np.ndarray, res: int) -> np.ndarray:
    """(b res res 3) uint8 frames for b cameras at (x, eye, z) looking along yaw; all (b,)."""
    optics, far, n = scene.optics(res), np.float32(scene.cfg.view_distance), scene.world.size
    x, z, yaw = (v.astype(np.float32) for v in (x, z, yaw))
    cos, sin = np.cos(yaw), np.sin(yaw)
    # one ray per (frame, screen column), direction at unit depth (so t is depth: no fisheye)
    dir_x = rearrange(cos[:, None] - optics.ndc[None] * sin[:, None], "b w -> (b w)")
    dir_z = rearrange(sin[:, None] + optics.ndc[None] * cos[:, None], "b w -> (b w)")
    origin_x, origin_z, eye_r = (repeat(v, "b -> (b w)", w=res) for v in (x, z, eye.astype(np.float32)))

    # per crossing (r k): the last crossing of every ray stands for the sky
    cells, t_in, t_out, x_face = march(origin_x, origin_z, dir_x, dir_z, far, n)
    rise = scene.height[cells] - eye_r[:, None]  # column top above the eye
    top_row = optics.horizon + optics.focal * rise / np.maximum(np.where(rise > 0, t_in, t_out), 1e-4)
    top_row[t_in >= far] = -np.inf  # hidden by fog
    covered = np.maximum.accumulate(np.clip(np.ceil(top_row - 0.5), 0, res).astype(np.int32), axis=1)
    rows = np.diff(covered, axis=1, prepend=0)
    rows[:, -1] = res - covered[:, -2]
    entry_u = np.floor(np.where(x_face, origin_z[:, None] + dir_z[:, None] * t_in, origin_x[:, None] + dir_x[:, None] * t_in) * TEXELS)
    distance = np.minimum(t_in * (DISTANCE_LEVELS / far), DISTANCE_LEVELS - 1).astype(np.int32)
    side_offset = np.where(x_face, 1, 2) * TEXELS * TEXELS + (entry_u.astype(np.int32) & (TEXELS - 1))

    # per pixel (r h), rows bottom up
    crossing = np.repeat(np.arange(rows.size, dtype=np.int32), rearrange(rows, "r k -> (r k)"))
    of_pixel = lambda values: rearrange(values, "r k -> (r k)")[crossing]  # noqa: E731
    along_ray = lambda values: repeat(values, "r -> (r h)", h=res)  # noqa: E731
    slope = repeat(optics.slope, "h -> (r h)", r=len(dir_x))
    t_hit, rise_hit = of_pixel(t_in), of_pixel(rise)
    below_top = rise_hit - slope * t_hit  # column top minus ray height where the ray enters the cell
    side = below_top >= 0
    layer = np.minimum(np.where(side, below_top, 0).astype(np.int32), MAX_HEIGHT - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_top = rise_hit / slope  # depth where the ray drops to the column top
        texel_x = np.floor((along_ray(origin_x) + along_ray(dir_x) * t_top) * TEXELS).astype(np.int32)
        texel_z = np.floor((along_ray(origin_z) + along_ray(dir_z) * t_top) * TEXELS).astype(np.int32)
        texel_v = np.where(side, (below_top * TEXELS).astype(np.int32), texel_z) & (TEXELS - 1)
    texel_u = np.where(side, of_pixel(side_offset), texel_x & (TEXELS - 1))
    block = scene.block_offset[of_pixel(cells) * MAX_HEIGHT + layer]
    index = of_pixel(distance) * (len(Block) * FACE_TEXELS) + block + texel_v * TEXELS + texel_u
    colour = optics.colours[index]

    sky = crossing % rows.shape[1] == rows.shape[1] - 1
    azimuth = (azimuth_bin(yaw)[:, None] + optics.sky_columns[None]) % AZIMUTH_BINS
    sky_index = rearrange(optics.sky_rows[None] + azimuth[..., None], "b w h -> (b w h)")
    colour[sky] = scene.sky[sky_index[sky]]
    return unpack_rgb(np.ascontiguousarray(rearrange(colour, "(b w h) -> b h w", w=res, h=res)[:, ::-1]))


def march(
    origin_x: np.ndarray, origin_z: np.ndarray, dir_x: np.ndarray, dir_z: np.ndarray, far: float, n: int
) -> tuple[np.ndarray, ...]:
    """2-D DDA over the wrapping grid: (r k) cell index, entry and exit depth, and whether the
    ray entered through an x face, for every cell a ray crosses before depth `far` (and one more)."""
    steps = int(np.ceil(far * (np.abs(dir_x) + np.abs(dir_z)).max())) + 2
    cell_x, cell_z = np.floor(origin_x).astype(np.int32), np.floor(origin_z).astype(np.int32)
    step_x, step_z = np.where(dir_x > 0, 1, -1).astype(np.int32), np.where(dir_z > 0, 1, -1).astype(np.int32)
    with np.errstate(divide="ignore"):
        inv_x = np.minimum(1 / np.abs(dir_x), FAR_AWAY)
        inv_z = np.minimum(1 / np.abs(dir_z), FAR_AWAY)
    next_x = np.where(dir_x > 0, cell_x + 1 - origin_x, origin_x - cell_x) * inv_x
    next_z = np.where(dir_z > 0, cell_z + 1 - origin_z, origin_z - cell_z) * inv_z
    rays = len(origin_x)
    cells = np.empty((rays, steps), np.int32)
    t_in = np.empty((rays, steps), np.float32)
    t_out = np.empty((rays, steps), np.float32)
    x_face = np.zeros((rays, steps), bool)
    entry = np.zeros(rays, np.float32)
    for k in range(steps):
        cells[:, k] = (cell_z % n) * n + cell_x % n
        t_in[:, k] = entry
        crosses_x = next_x < next_z
        entry = np.minimum(next_x, next_z)
        t_out[:, k] = entry
        if k + 1 < steps:
            x_face[:, k + 1] = crosses_x
        cell_x += step_x * crosses_x
        cell_z += step_z * ~crosses_x
        next_x += inv_x * crosses_x
        next_z += inv_z * ~crosses_x
    return cells, t_in, t_out, x_face
