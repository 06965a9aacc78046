"""Block types, their procedural 8x8 textures, and the lit, fogged colour table the renderer reads.

Textures are (v u rgb), row 0 at the top of a side face. The colour table bakes in everything
that depends only on a block face's distance from the camera: the mip level (distant faces
average 2^m x 2^m texels instead of flickering between them), face lighting (tops bright,
x-facing sides darker, z-facing sides darkest) and fog. A pixel's colour is then one lookup.
"""

from __future__ import annotations

import functools
from enum import IntEnum

import numpy as np
from einops import rearrange, reduce, repeat

TEXELS = 8
MIPS = 4  # 8, 4, 2, 1 texels per side
FACES = 3  # top, x-facing side, z-facing side
FACE_LIGHT = (1.0, 0.82, 0.64)
DISTANCE_LEVELS = 64  # fog and mip level are looked up per 1/64 of the view distance
SKY_HORIZON = np.array([200, 220, 240], np.float32)  # also the fog colour


class Block(IntEnum):
    GRASS = 0
    DIRT = 1
    STONE = 2
    SAND = 3
    WATER = 4
    SNOW = 5
    WOOD = 6
    LEAVES = 7
    WALL = 8  # planks with a window: house walls
    ROOF = 9
    RED = 10  # the landmark towers' colours follow
    BLUE = 11
    YELLOW = 12
    MAGENTA = 13
    ORANGE = 14
    CYAN = 15
    WHITE = 16
    BLACK = 17


LANDMARK_BLOCKS = (Block.RED, Block.BLUE, Block.YELLOW, Block.MAGENTA, Block.ORANGE, Block.CYAN, Block.WHITE, Block.BLACK)
WOOL_COLOURS = {
    Block.RED: (190, 40, 40),
    Block.BLUE: (50, 70, 200),
    Block.YELLOW: (235, 200, 40),
    Block.MAGENTA: (190, 60, 190),
    Block.ORANGE: (235, 120, 30),
    Block.CYAN: (30, 170, 170),
    Block.WHITE: (235, 235, 235),
    Block.BLACK: (35, 35, 40),
}
GREEN, BROWN = (95, 160, 60), (130, 90, 60)


def speckled(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> np.ndarray:
    """(v u 3) texture: a base colour with per-texel brightness noise."""
    light = 1 + amount * rng.standard_normal((TEXELS, TEXELS, 1))
    return np.asarray(rgb, np.float32) * light.astype(np.float32)


def darken(texture: np.ndarray, rows: slice = slice(None), cols: slice = slice(None), light: float = 0.75) -> np.ndarray:
    out = texture.copy()
    out[rows, cols] *= light
    return out


def block_faces(rng: np.random.Generator, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """(top, side) textures of one block type."""
    if block in WOOL_COLOURS:
        wool = speckled(rng, WOOL_COLOURS[block], 0.06)
        return wool, darken(wool, rows=slice(0, 1), light=0.7)
    dirt = speckled(rng, BROWN, 0.12)
    grass = speckled(rng, GREEN, 0.12)
    if block == Block.GRASS:
        side = dirt.copy()
        side[:2] = grass[:2]
        side[2, rng.random(TEXELS) < 0.5] = grass[2, 0]
        return grass, side
    if block == Block.DIRT:
        return dirt, dirt
    if block == Block.STONE:
        stone = speckled(rng, (125, 125, 125), 0.1)
        stone[rng.random((TEXELS, TEXELS)) < 0.15] *= 0.7
        return stone, stone
    if block == Block.SAND:
        sand = speckled(rng, (220, 205, 150), 0.05)
        return sand, sand
    if block == Block.WATER:
        water = speckled(rng, (50, 90, 190), 0.04)
        water[1::4, rng.integers(0, 4) :: 2] *= 1.25
        return water, water
    if block == Block.SNOW:
        snow = speckled(rng, (240, 245, 250), 0.03)
        side = dirt.copy()
        side[:2] = snow[:2]
        return snow, side
    if block == Block.WOOD:
        bark = darken(speckled(rng, (105, 80, 50), 0.1), cols=slice(1, None, 3), light=0.7)
        rings = speckled(rng, (170, 135, 85), 0.05)
        rings[1:7, 1:7] *= 0.8
        rings[3:5, 3:5] /= 0.8
        return rings, bark
    if block == Block.LEAVES:
        leaves = speckled(rng, (55, 120, 40), 0.15)
        leaves[rng.random((TEXELS, TEXELS)) < 0.25] *= 0.55
        return leaves, leaves
    if block == Block.WALL:
        planks = darken(speckled(rng, (175, 140, 90), 0.06), rows=slice(3, None, 4), light=0.7)
        window = planks.copy()
        window[2:6, 2:6] = (150, 200, 230)
        window[3:5, 3:5] = (120, 170, 210)
        return planks, window
    if block == Block.ROOF:
        brick = speckled(rng, (160, 60, 45), 0.08)
        brick[::3] = (190, 180, 170)
        return brick, brick
    raise ValueError(f"no texture for block {block!r}")


def textures(seed: int = 1234) -> np.ndarray:
    """(blocks, faces, mips, v, u, 3) float32: every face lit, at every mip level (kept at 8x8)."""
    rng = np.random.default_rng(seed)
    top_side = np.clip(np.stack([np.stack(block_faces(rng, block)) for block in Block]), 0, 255)  # (b 2 v u c)
    faces = np.stack([top_side[:, 0], top_side[:, 1], top_side[:, 1]], axis=1) * np.array(FACE_LIGHT, np.float32)[:, None, None, None]
    levels = [
        repeat(reduce(faces, "b f (v s) (u t) c -> b f v u c", "mean", s=2**m, t=2**m), "b f v u c -> b f (v s) (u t) c", s=2**m, t=2**m)
        for m in range(MIPS)
    ]
    return np.stack(levels, axis=2).astype(np.float32)


@functools.lru_cache(maxsize=16)
def colour_table(focal: float, view_distance: float) -> np.ndarray:
    """(DISTANCE_LEVELS*blocks*FACES*TEXELS*TEXELS,) uint32 packed RGBA (read-only), indexed by
    (distance level, block, face, v, u) for a camera with `focal` pixels of focal length."""
    depth = (np.arange(DISTANCE_LEVELS) + 0.5) * view_distance / DISTANCE_LEVELS
    texel_pixels = focal / (depth * TEXELS)  # screen pixels one texel covers at that depth
    mip = np.clip(np.ceil(np.log2(0.75 / texel_pixels)), 0, MIPS - 1).astype(np.int64)  # 2^m texels >= 3/4 pixel
    fog = np.clip((depth - 0.5 * view_distance) / (0.5 * view_distance), 0, 1) ** 2
    lit = textures()[:, :, mip]  # (b f d v u c)
    fogged = lit * (1 - fog)[None, None, :, None, None, None] + SKY_HORIZON * fog[None, None, :, None, None, None]
    table = pack_rgb(rearrange(fogged, "b f d v u c -> (d b f v u) c"))
    table.flags.writeable = False
    return table


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(n 3) colours 0..255 -> (n,) uint32 whose little-endian bytes are r, g, b, 255."""
    rgba = np.concatenate([np.clip(np.rint(rgb), 0, 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    return rearrange(rgba.view("<u4"), "n 1 -> n")


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(...,) uint32 -> (... 3) uint8 (a view)."""
    return rearrange(packed.astype("<u4", copy=False).view(np.uint8), "... (p c) -> ... p c", c=4)[..., :3]
