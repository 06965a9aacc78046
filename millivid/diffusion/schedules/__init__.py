"""Rollout schedule families, one module each, registered by `kind` (as the release's
`source/strategy/__init__.py` registers its strategies by name).

    schedule = build_schedule(MilliVidScheduleConfig(windows=(1, 4, 16, 64), extra_budget=256), (256, 64, 16, 4))
    len(schedule.steps), schedule.max_tokens, schedule.span, schedule.stride   # 85, 1280, 149, 64

A family is a config class (a frozen pydantic model with a `kind` literal and a `levels` property:
the level count the config spells out, None when it fits any) and a
`build(config, tokens_per_level) -> Chunk`; adding one means adding a module and a FAMILIES entry
(`ScheduleConfig`, the union configs validate against by `kind`, is made from the table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union

from pydantic import Field

from millivid.diffusion.schedule_core import Schedule, ScheduleError
from millivid.diffusion.schedules import framepack, full_res, millivid
from millivid.diffusion.schedules.chunk import Chunk
from millivid.diffusion.schedules.framepack import FramePackScheduleConfig
from millivid.diffusion.schedules.full_res import FullResScheduleConfig
from millivid.diffusion.schedules.millivid import MilliVidScheduleConfig

FAMILIES: dict[str, tuple[type, Callable[[Any, tuple[int, ...]], Chunk]]] = {
    "millivid": (MilliVidScheduleConfig, millivid.build),
    "full_res": (FullResScheduleConfig, full_res.build),
    "framepack": (FramePackScheduleConfig, framepack.build),
}

# A config of any family, told apart by `kind`; an unknown kind's error names the field and the known
# kinds. Union[...] of the table's classes: ruff's `X | Y` rewrite does not apply to a computed tuple.
ScheduleConfig = Annotated[
    Union[tuple(config for config, _ in FAMILIES.values())],  # noqa: UP007
    Field(discriminator="kind"),
]


def build_schedule(config: ScheduleConfig, tokens_per_level: Sequence[int], name: str | None = None) -> Schedule:
    """The Schedule of `config` for a latent with `tokens_per_level` (finest first); name defaults to the kind.

    Raises ScheduleError naming the field when the config does not fit the geometry.
    """
    tokens = tuple(int(t) for t in tokens_per_level)
    if not tokens or min(tokens) < 1:
        raise ScheduleError(f"tokens_per_level must be positive integers, finest first, got {tokens_per_level!r}")
    if config.kind not in FAMILIES:
        raise ScheduleError(f"unknown schedule kind {config.kind!r}; known: {', '.join(FAMILIES)}")
    chunk = FAMILIES[config.kind][1](config, tokens)
    return Schedule(
        name=name or config.kind,
        kind=config.kind,
        tokens_per_level=tokens,
        steps=chunk.steps,
        stride=chunk.stride,
        context_source=getattr(config, "context_source", "hierarchical"),
        coarse_context_from_finest=chunk.coarse_context_from_finest,
    )


def build_schedules(methods: Mapping[str, ScheduleConfig], tokens_per_level: Sequence[int]) -> dict[str, Schedule]:
    """Schedules of every method of a DiffusionConfig (`config.diffusion.methods`), by method name."""
    return {name: build_schedule(config, tokens_per_level, name) for name, config in methods.items()}
