"""The sky as a panorama around the camera: a gradient, a square sun and blocky clouds.

The sky depends only on the viewing direction (no parallax), so every sky pixel is one lookup
by (elevation, azimuth) bin; turning the camera turns the sky, which is a cue to the heading.
Every world shares one sky, so the panorama is made once per process.
"""

from __future__ import annotations

import functools

import numpy as np
from einops import rearrange

from millivid.world.blocks import SKY_HORIZON, pack_rgb

SKY_ZENITH = np.array([90, 140, 225], np.float32)
SUN = np.array([255, 250, 215], np.float32)
AZIMUTH_BINS, ELEVATION_BINS = 1024, 256
SUN_AZIMUTH, SUN_ELEVATION, SUN_RADIUS = 0.6, 0.35, 0.06
CLOUD_HEIGHT, CLOUD_CELL, CLOUD_CELLS = 20.0, 4.0, 32


CLOUD_SEED = 7


@functools.cache
def panorama() -> np.ndarray:
    """(ELEVATION_BINS * AZIMUTH_BINS,) uint32 packed colours, elevation-major (read-only)."""
    elevation = (np.arange(ELEVATION_BINS) + 0.5) / ELEVATION_BINS * np.pi - np.pi / 2
    azimuth = (np.arange(AZIMUTH_BINS) + 0.5) / AZIMUTH_BINS * 2 * np.pi
    elevation, azimuth = np.meshgrid(elevation, azimuth, indexing="ij")
    height = np.clip(np.tan(np.clip(elevation, 0, 1.5)) * 1.6, 0, 1)[..., None] ** 0.8
    colour = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * height

    reach = CLOUD_HEIGHT / np.tan(np.clip(elevation, 1e-3, None))  # blocks to the cloud layer
    cells = clouds(CLOUD_SEED)
    cell_x = np.floor(reach * np.cos(azimuth) / CLOUD_CELL).astype(np.int64) % CLOUD_CELLS
    cell_z = np.floor(reach * np.sin(azimuth) / CLOUD_CELL).astype(np.int64) % CLOUD_CELLS
    strength = 0.85 * cells[cell_z, cell_x] * np.clip(1 - reach / 150, 0, 1) * (elevation > 0.03)
    colour += (255 - colour) * strength[..., None]

    off_sun = np.abs((azimuth - SUN_AZIMUTH + np.pi) % (2 * np.pi) - np.pi)
    colour[(off_sun < SUN_RADIUS) & (np.abs(elevation - SUN_ELEVATION) < SUN_RADIUS)] = SUN
    packed = pack_rgb(rearrange(colour, "e a c -> (e a) c"))
    packed.flags.writeable = False
    return packed


def clouds(seed: int) -> np.ndarray:
    """(CLOUD_CELLS CLOUD_CELLS) bool: about 30% of the cells, in clumps."""
    noise = np.random.default_rng(seed).standard_normal((CLOUD_CELLS, CLOUD_CELLS))
    frequency = np.fft.fftfreq(CLOUD_CELLS)
    low_pass = np.exp(-(np.hypot(*np.meshgrid(frequency, frequency)) * 4.0) ** 2)
    smooth = np.fft.ifft2(np.fft.fft2(noise) * low_pass).real
    return smooth > np.quantile(smooth, 0.7)


def elevation_bin(elevation: np.ndarray) -> np.ndarray:
    return np.clip(((elevation + np.pi / 2) / np.pi * ELEVATION_BINS).astype(np.int32), 0, ELEVATION_BINS - 1)


def azimuth_bin(azimuth: np.ndarray) -> np.ndarray:
    return np.floor(azimuth / (2 * np.pi) * AZIMUTH_BINS).astype(np.int64) % AZIMUTH_BINS
