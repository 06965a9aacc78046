"""A seeded block world: a wrap-around heightmap of block columns with trees, houses and towers.

Every cell is one column of blocks standing on the ground plane: `height` blocks tall, the top
`cap` blocks of type `top`, the next 3 of type `body`, stone below. Trees, houses and the
coloured landmark towers are columns too, so one ray caster over the heightmap renders all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from millivid.world.blocks import LANDMARK_BLOCKS, Block
from millivid.world.config import WorldConfig

SEA_LEVEL = 3
MAX_HEIGHT = 24


@dataclass(frozen=True)
class World:
    height: np.ndarray  # (n n) int32: blocks in the column at cell [z, x]
    top: np.ndarray  # (n n) uint8 Block of the top `cap` blocks
    body: np.ndarray  # (n n) uint8 Block of the 3 blocks below them
    cap: np.ndarray  # (n n) int32
    landmarks: np.ndarray  # (k 2) float32 x, z of each tower's centre

    @property
    def size(self) -> int:
        return self.height.shape[0]

    def walkable(self) -> np.ndarray:
        """(n n) bool: cells an agent may stand on (not water, not a house or tower)."""
        return (self.top != Block.WATER) & (self.top != Block.ROOF) & ~np.isin(self.top, LANDMARK_BLOCKS)


def periodic_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """(n n) smooth noise in about [-1, 1] that tiles: white noise low-passed in Fourier space."""
    frequency = np.fft.fftfreq(n)
    radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) * np.exp(-((radius * scale) ** 2)) / np.maximum(radius, 1 / n)
    field = np.fft.ifft2(spectrum).real
    return field / (np.abs(field).max() + 1e-9)


def generate(seed: int | list[int], cfg: WorldConfig) -> World:
    rng = np.random.default_rng(seed)
    n = cfg.map_size
    hills = 0.7 * periodic_noise(rng, n, 6.0) + 0.3 * periodic_noise(rng, n, 2.0)
    height = np.clip(np.round(5 + 7 * hills), 1, MAX_HEIGHT).astype(np.int32)
    top = np.full((n, n), Block.GRASS, np.uint8)
    body = np.full((n, n), Block.DIRT, np.uint8)
    cap = np.ones((n, n), np.int32)
    water = height < SEA_LEVEL
    height[water] = SEA_LEVEL
    top[water] = Block.WATER
    beach = ~water & (height <= SEA_LEVEL + 1) & near(water, 2)
    top[beach], body[beach] = Block.SAND, Block.SAND
    rocky = height >= 10
    top[rocky], body[rocky] = Block.STONE, Block.STONE
    top[height >= 12] = Block.SNOW
    world = World(height, top, body, cap, np.zeros((0, 2), np.float32))
    towers = place_towers(rng, world, cfg.landmarks)
    place_houses(rng, world, cfg.houses)
    place_trees(rng, world, cfg.tree_density)
    return World(height, top, body, cap, towers)


def near(mask: np.ndarray, radius: int) -> np.ndarray:
    """Cells within `radius` (Chebyshev, wrapping) of a True cell."""
    out = mask.copy()
    for dz in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(mask, (dz, dx), axis=(0, 1))
    return out


def footprint(n: int, z: int, x: int, depth: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    zs, xs = np.meshgrid(np.arange(z, z + depth) % n, np.arange(x, x + width) % n, indexing="ij")
    return zs, xs


def place_towers(rng: np.random.Generator, world: World, count: int) -> np.ndarray:
    """2x2 towers of distinct colours, spread out (farthest-point sampling over land)."""
    n = world.size
    land = np.argwhere(world.walkable())
    chosen: list[np.ndarray] = []
    for colour in LANDMARK_BLOCKS[:count]:
        if chosen:
            gaps = np.abs(land[:, None, :] - np.stack(chosen)[None])
            gaps = np.minimum(gaps, n - gaps)
            spread = np.hypot(gaps[..., 0], gaps[..., 1]).min(axis=1)
            candidates = land[spread >= 0.9 * spread.max()]
        else:
            candidates = land
        z, x = candidates[rng.integers(len(candidates))]
        zs, xs = footprint(n, z, x, 2, 2)
        ground = world.height[zs, xs].max()
        world.height[zs, xs] = ground + rng.integers(7, 12)
        world.top[zs, xs] = colour
        world.cap[zs, xs] = MAX_HEIGHT
        chosen.append(np.array([z, x]))
    return np.array([[x + 1.0, z + 1.0] for z, x in chosen] or np.zeros((0, 2)), np.float32)


def place_houses(rng: np.random.Generator, world: World, count: int) -> None:
    """4x5 huts of windowed plank walls under a brick roof, on the flattest free land."""
    n = world.size
    for _ in range(count):
        for _attempt in range(30):
            z, x = rng.integers(0, n, size=2)
            zs, xs = footprint(n, z, x, 4, 5)
            cells = world.height[zs, xs]
            if world.walkable()[zs, xs].all() and cells.max() - cells.min() <= 1:
                world.height[zs, xs] = cells.max() + 3
                world.top[zs, xs], world.body[zs, xs], world.cap[zs, xs] = Block.ROOF, Block.WALL, 1
                break


def place_trees(rng: np.random.Generator, world: World, density: float) -> None:
    """Spruce-like trees: a tall leafy crown on a trunk, a low leafy skirt around it."""
    grass = np.argwhere(world.top == Block.GRASS)
    trunks = grass[rng.random(len(grass)) < density]
    n = world.size
    for z, x in trunks:
        ground = world.height[z, x]
        for dz, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            cell = ((z + dz) % n, (x + dx) % n)
            if world.top[cell] == Block.GRASS and world.height[cell] == ground:
                world.height[cell], world.top[cell], world.cap[cell] = ground + 2, Block.LEAVES, 2
        world.height[z, x] = ground + 5
        world.top[z, x], world.body[z, x], world.cap[z, x] = Block.LEAVES, Block.WOOD, 3
