"""How the camera moves: forward steps with collisions, turns by a fixed angle.

The agent is a square of side 2 * RADIUS standing on the highest cell under it. A move is
refused when any cell under the new square is not walkable (water, a house, a tower) or when
the standing height would change by more than one block (step up or down one block at most,
so every move can be undone, which keeps return trips possible). A blocked diagonal move
slides along the wall on one axis. Positions are not wrapped: the world repeats every
`map_size` blocks, and a pose's x, z say how far the agent walked, so a revisit is a return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from millivid.pose import camera_pose
from millivid.world.config import WorldConfig
from millivid.world.terrain import World

FORWARD, LEFT, RIGHT = 0, 1, 2
RADIUS = 0.3


@dataclass(frozen=True)
class Body:
    x: float
    z: float
    heading: int  # yaw = heading * turn angle; turning right adds one
    stand: int  # height of the ground under the agent, in blocks


class Walker:
    def __init__(self, world: World, cfg: WorldConfig):
        self.world, self.cfg = world, cfg
        self.walkable = world.walkable()

    def yaw(self, heading: int) -> float:
        return (heading % self.cfg.headings) * 2 * math.pi / self.cfg.headings

    def eye(self, body: Body) -> float:
        return body.stand + self.cfg.eye_height

    def camera(self, bodies: list[Body]) -> np.ndarray:
        """(t 5) camera poses x, y (eye), z, yaw, pitch of a sequence of bodies."""
        return camera_pose(
            [b.x for b in bodies], [self.eye(b) for b in bodies], [b.z for b in bodies],
            [self.yaw(b.heading) for b in bodies], math.radians(self.cfg.pitch_degrees),
        )

    def ground_under(self, x: float, z: float) -> int | None:
        """Standing height of a body centred at (x, z), or None where it cannot stand."""
        n = self.world.size
        xs = {math.floor(x - RADIUS) % n, math.floor(x + RADIUS) % n}
        zs = {math.floor(z - RADIUS) % n, math.floor(z + RADIUS) % n}
        cells = [(cz, cx) for cz in zs for cx in xs]
        if not all(self.walkable[cell] for cell in cells):
            return None
        return int(max(self.world.height[cell] for cell in cells))

    def act(self, body: Body, action: int) -> Body:
        if action == LEFT:
            return Body(body.x, body.z, body.heading - 1, body.stand)
        if action == RIGHT:
            return Body(body.x, body.z, body.heading + 1, body.stand)
        yaw = self.yaw(body.heading)
        dx, dz = self.cfg.step * math.cos(yaw), self.cfg.step * math.sin(yaw)
        for x, z in ((body.x + dx, body.z + dz), (body.x + dx, body.z), (body.x, body.z + dz)):
            stand = self.ground_under(x, z)
            if stand is not None and abs(stand - body.stand) <= 1:
                return Body(x, z, body.heading, stand)
        return body

    def start(self, rng: np.random.Generator) -> Body:
        """A random cell centre with open, level ground around it, facing a random heading."""
        height = self.world.height
        level = np.ones_like(self.walkable)
        for dz in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = (dz, dx)
                level &= np.roll(self.walkable, shifted, axis=(0, 1))
                level &= np.abs(np.roll(height, shifted, axis=(0, 1)) - height) <= 1
        cells = np.argwhere(level)
        if not len(cells):
            raise ValueError("the world has no open ground to start on")
        z, x = cells[rng.integers(len(cells))]
        return Body(float(x + 0.5), float(z + 0.5), int(rng.integers(self.cfg.headings)), int(height[z, x]))
