"""Rollout schedules as data: the one place the sampler, the training task and the CLI get them from.

    from millivid.diffusion.schedule import build_schedule, plan_rollout, CONTEXT, DENOISED
    schedule = build_schedule(MilliVidScheduleConfig(windows=(1, 4, 16, 64), extra_budget=256), (256, 64, 16, 4))
    len(schedule.steps), schedule.max_tokens, schedule.span, schedule.stride   # 85, 1280, 149, 64
    schedule.steps[i]            # (levels, span) read-only int8: UNSEEN=0, CONTEXT=1, DENOISED=2
    schedule.denoised_level(i)   # the one level step i denoises (0 = finest)
    plan = plan_rollout(schedule, context_frames=256, total_frames=1024)
    plan[k].frames, plan[k].matrix   # absolute frame per column; the step with frames < 0 dropped
    frames_needed(plan)              # latent buffers / actions must reach this frame (look-ahead)

Where things live (all re-exported here):
  schedule_core     UNSEEN/CONTEXT/DENOISED, Schedule, Reach, ScheduleError, validate_schedule,
                    training_step_weights, budget_warnings
  schedules         build_schedule, build_schedules; one module per family (millivid, full_res,
                    framepack) registered by kind
  plan              PlannedStep, plan_rollout, frames_needed, describe_plan, visible_context
  schedule_draw     pictures: GIF / HTML animation / overview PNG of a schedule
"""

from millivid.diffusion.plan import (
    PlannedStep,
    describe_plan,
    frames_needed,
    plan_rollout,
    visible_context,
)
from millivid.diffusion.schedule_core import (
    CONTEXT,
    CONTEXT_SOURCES,
    DENOISED,
    UNSEEN,
    Reach,
    Schedule,
    ScheduleError,
    budget_warnings,
    step_tokens,
    training_step_weights,
    validate_schedule,
)
from millivid.diffusion.schedules import build_schedule, build_schedules

__all__ = [
    "CONTEXT",
    "CONTEXT_SOURCES",
    "DENOISED",
    "UNSEEN",
    "PlannedStep",
    "Reach",
    "Schedule",
    "ScheduleError",
    "budget_warnings",
    "build_schedule",
    "build_schedules",
    "describe_plan",
    "frames_needed",
    "plan_rollout",
    "step_tokens",
    "training_step_weights",
    "validate_schedule",
    "visible_context",
]
