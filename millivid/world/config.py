"""Configuration of the built-in block world: map, camera and movement."""

from __future__ import annotations

from pydantic import Field, field_validator

from millivid.schema import Frozen


class WorldConfig(Frozen):
    map_size: int = Field(64, ge=16, description="cells per side; the map wraps around (a torus)")
    landmarks: int = Field(6, ge=0, le=8, description="coloured towers, each a different colour")
    houses: int = Field(4, ge=0)
    tree_density: float = Field(0.012, ge=0, le=0.2, description="fraction of grass cells holding a tree")
    fov_degrees: float = Field(70.0, gt=10, lt=150, description="horizontal and vertical field of view")
    pitch_degrees: float = Field(-10.0, ge=-45, le=45, description="camera tilt (negative looks down)")
    eye_height: float = Field(1.6, gt=0.5, description="blocks above the ground the agent stands on")
    view_distance: float = Field(24.0, ge=4, description="blocks; fog reaches the sky colour there")
    turn_degrees: float = Field(7.5, gt=0, le=180, description="yaw change of one turn frame; must divide 360")
    step: float = Field(0.2, gt=0, le=0.5, description="blocks moved by one forward frame")
    supersample: int = Field(0, ge=0, le=8, description="render at this many times the frame size, then area-average; 0: at least 64 pixels")

    @field_validator("turn_degrees")
    @classmethod
    def _divides_full_turn(cls, degrees: float) -> float:
        turns = 360 / degrees
        if abs(turns - round(turns)) > 1e-9:
            raise ValueError(f"must divide 360 so that turning in place comes back exactly, got {degrees}")
        return degrees

    @property
    def headings(self) -> int:
        """Distinct yaw values the agent can face."""
        return round(360 / self.turn_degrees)

    def render_scale(self, size: int) -> int:
        return self.supersample or max(1, 64 // size)
