"""Trajectory policies that make loops: content leaves the view and comes back.

A policy picks one action per decision; the action is held for `hold` frames. Behaviours:
  wander   - walk mostly forward, turning now and then and away from walls
  return   - wander out, turn 180 degrees, walk the same way back, face the start direction again
  spin     - turn 360 degrees in place
  revisit  - wander, then walk back to a remembered earlier spot and face the way it faced there
  mixed    - a seeded random sequence of the above (the default), drawn with weights `mix`
The closed-loop controllers steer by the agent's pose, so collisions do not break the loops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from millivid.world.agent import FORWARD, LEFT, RIGHT, Body, Walker

POLICIES = ("mixed", "wander", "return", "spin", "revisit")
MIXED_WEIGHTS = {"return": 0.35, "revisit": 0.35, "spin": 0.15, "wander": 0.15}
BEHAVIOURS = tuple(MIXED_WEIGHTS)  # the mixed policy draws an index into this order: reordering changes every episode


class EpisodeFull(Exception):
    """Raised inside a behaviour when the episode has all its frames."""


@dataclass
class Trajectory:
    """(t,) actions and (t 5) camera poses (millivid.pose); action i moved the camera to pose i."""

    actions: np.ndarray
    pose: np.ndarray


@dataclass
class Pilot:
    walker: Walker
    body: Body
    rng: np.random.Generator
    frames: int
    hold: int
    actions: list[int] = field(default_factory=list)
    bodies: list[Body] = field(default_factory=list)

    @property
    def turn(self) -> float:
        """Yaw change of one held turn decision, radians."""
        return self.hold * 2 * math.pi / self.walker.cfg.headings

    @property
    def stride(self) -> float:
        return self.hold * self.walker.cfg.step

    def do(self, action: int) -> bool:
        """Hold `action` for one decision; True if the agent moved or turned."""
        before = self.body
        for _ in range(self.hold):
            if len(self.actions) == self.frames:
                raise EpisodeFull
            self.body = self.walker.act(self.body, action)
            self.actions.append(action)
            self.bodies.append(self.body)
        return self.body != before

    def wander(self, decisions: int) -> list[Body]:
        """Random walk with momentum; returns the body after each decision (the path walked)."""
        path, turning = [self.body], 0
        for _ in range(decisions):
            if turning:
                self.do(LEFT if turning < 0 else RIGHT)
                turning -= int(np.sign(turning))
            elif self.rng.random() < min(0.5, 0.02 * self.hold):
                turning = int(self.rng.choice([-1, 1]) * self.rng.integers(1, max(2, round(math.pi / 2 / self.turn)) + 1))
            elif not self.do(FORWARD):
                turning = int(self.rng.choice([-1, 1]) * self.rng.integers(1, max(2, round(math.pi / self.turn)) + 1))
            path.append(self.body)
        return path

    def face(self, yaw: float) -> None:
        while abs(error := angle_to(self.walker.yaw(self.body.heading), yaw)) > self.turn / 2 + 1e-9:
            self.do(RIGHT if error > 0 else LEFT)

    def go_to(self, x: float, z: float, tolerance: float) -> bool:
        """Steer to within `tolerance` of (x, z); False when a wall is in the way or it takes too long."""
        distance = math.hypot(x - self.body.x, z - self.body.z)
        for _ in range(round(3 * distance / self.stride + 2 * math.pi / self.turn) + 4):
            if distance <= tolerance:
                return True
            error = angle_to(self.walker.yaw(self.body.heading), math.atan2(z - self.body.z, x - self.body.x))
            if abs(error) > max(self.turn / 2, math.atan2(tolerance, distance)):
                self.do(RIGHT if error > 0 else LEFT)
            elif not self.do(FORWARD):
                return False
            distance = math.hypot(x - self.body.x, z - self.body.z)
        return distance <= tolerance

    def retrace(self, path: list[Body]) -> bool:
        """Walk back along `path` (latest first) to its first body, then face the way it faced."""
        target, failures = path[0], 0
        for body in path[-2:0:-1]:
            if math.hypot(body.x - self.body.x, body.z - self.body.z) > self.stride:
                failures += not self.go_to(body.x, body.z, self.stride)
                if failures > 2:
                    return False
        if not self.go_to(target.x, target.z, max(self.walker.cfg.step, self.stride / 2)):
            return False
        self.face(self.walker.yaw(target.heading))
        return True

    def return_trip(self) -> None:
        outward = self.wander(int(self.rng.integers(8, 24)) * max(1, 9 // self.hold))
        self.face(self.walker.yaw(self.body.heading) + math.pi)
        self.retrace(outward)

    def spin(self) -> None:
        direction = LEFT if self.rng.random() < 0.5 else RIGHT
        for _ in range(round(2 * math.pi / self.turn)):
            self.do(direction)

    def revisit(self) -> None:
        path = self.wander(int(self.rng.integers(12, 36)) * max(1, 9 // self.hold))
        back_to = int(self.rng.integers(0, max(1, len(path) // 2)))
        self.retrace(path[back_to:])

    def run(self, policy: str, probabilities: np.ndarray) -> None:
        """Act out `policy`; mixed draws each behaviour with `probabilities` (one per BEHAVIOURS)."""
        behaviours = {"return": self.return_trip, "spin": self.spin, "revisit": self.revisit, "wander": lambda: self.wander(16)}
        try:
            while True:
                name = policy if policy != "mixed" else BEHAVIOURS[self.rng.choice(len(BEHAVIOURS), p=probabilities)]
                behaviours[name]()
        except EpisodeFull:
            return


def angle_to(yaw: float, target: float) -> float:
    """Signed smallest rotation from yaw to target, in (-pi, pi]."""
    return (target - yaw + math.pi) % (2 * math.pi) - math.pi


def mix_probabilities(mix: Mapping[str, float]) -> np.ndarray:
    """(len(BEHAVIOURS),) probabilities of the mixed policy's behaviours from relative weights;
    behaviours left out of `mix` have weight 0."""
    unknown = sorted(set(mix) - set(BEHAVIOURS))
    if unknown:
        raise ValueError(f"unknown behaviour(s) {unknown}; expected some of {', '.join(BEHAVIOURS)}")
    weights = np.array([mix.get(name, 0.0) for name in BEHAVIOURS], dtype=np.float64)
    total = weights.sum()
    if not ((weights >= 0).all() and 0 < total < np.inf):
        raise ValueError(f"behaviour weights must be >= 0 and sum to a finite number above 0, got {dict(mix)}")
    return weights / total


def trajectory(
    walker: Walker,
    rng: np.random.Generator,
    frames: int,
    hold: int = 1,
    policy: str = "mixed",
    *,
    mix: Mapping[str, float] = MIXED_WEIGHTS,
) -> Trajectory:
    """`frames` actions and poses of `policy`; `mix` weighs the behaviours of policy=mixed."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    probabilities = mix_probabilities(mix)
    pilot = Pilot(walker, walker.start(rng), rng, frames, hold)
    pilot.run(policy, probabilities)
    return Trajectory(np.array(pilot.actions, np.int8), walker.camera(pilot.bodies))
