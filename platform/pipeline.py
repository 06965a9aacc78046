"""The experiment pipeline's parameters and its parent MLflow run.

    params = PipelineParams(preset="smoke", overrides=["diffusion.train.steps=50"])
    with open_pipeline(settings, params) as (ctx, config):
        ...  # stages run with ctx; each gets a nested MLflow run
    ctx, config = probe_context(settings, params)  # stages only ask the cache (`stages.CacheMiss`)

`PipelineParams` is also the Prefect run form: its JSON schema offers the stages and the presets'
methods as choices and only the configuration's keys as overrides, so the Prefect server refuses a
mistyped run when it is created; the values are checked when the run starts, before any stage.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from millivid.config import PRESETS, ExperimentConfig, config_hash, load_config
from millivid_platform import object_store, tracking
from millivid_platform.settings import PlatformSettings
from millivid_platform.stages import PipelineContext, StagePaused, StageResult, mark_paused

log = logging.getLogger(__name__)

STAGES = ("data", "autoencoder", "encode", "diffusion", "evaluate", "report")
Stage = Literal["data", "autoencoder", "encode", "diffusion", "evaluate", "report"]
ForcedStage = Literal["data", "autoencoder", "encode", "diffusion", "evaluate", "report", "all"]

# The numbers of an evaluation a pipeline run shows as its own metrics, per method (keys as the
# evaluate run's `summary/<method>/<key>`).
HEADLINE_KEYS = ("lpips_last_half", "psnr_last_half", "ssim_last_half", "lpips_revisit")
RUN_LABEL_LIMIT = 200  # characters of a run name's label; every value of the config is a param anyway


def config_key_pattern(model: type[BaseModel] = ExperimentConfig) -> str:
    """A regular expression matching every dotted key an override may set (a section or a field)."""
    def keys(model: type[BaseModel], prefix: str) -> Iterator[str]:
        for name, field in model.model_fields.items():
            path = prefix + re.escape(name)
            yield path
            for inner in _annotation_members(field.annotation):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from keys(inner, path + r"\.")
                elif typing.get_origin(inner) is dict:  # named entries, e.g. diffusion.methods.NAME.field
                    yield path + r"\.[^=]+"

    return "^(?:" + "|".join(dict.fromkeys(keys(model, ""))) + ")=.*$"


def _annotation_members(annotation: Any) -> list[Any]:
    """The types an annotation admits: `A | B`, `Optional[A]` and `Annotated[A, ...]` unpacked."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _annotation_members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _annotation_members(arg)]
    return [annotation]


@functools.cache  # the presets ship with the package: the same in every call
def preset_methods() -> tuple[str, ...]:
    """Every rollout method some preset defines, in preset order."""
    return tuple(dict.fromkeys(name for preset in PRESETS for name in load_config(preset).diffusion.methods))


def offer_preset_methods(schema: dict[str, Any]) -> None:
    """The form's choices of methods: the presets' (`preset_methods`, read once per process), when a
    schema is made — Prefect makes the flows' when they are defined (importing `millivid_flows`), the
    command line's parser never."""
    schema["items"] = {"type": "string", "enum": list(preset_methods())}


# In the schema only: the Python side also takes methods and keys of configs that are not presets,
# and checks them against the resolved configuration (`PipelineParams._resolves`).
Override = Annotated[str, WithJsonSchema({"type": "string", "pattern": config_key_pattern()})]


class CheckedCopies(BaseModel):
    """Run forms whose validator resolves what the fields stand for into a private attribute:
    a copy with `update` is made and checked anew, so it resolves its own (pydantic's copy would
    keep the original's, and run no check)."""

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate({**dict(self), **update})


class PipelineParams(CheckedCopies):
    """Which experiment to run, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["smoke", "cpu", "paper"] = Field(
        "smoke", description="smoke: seconds on a laptop; cpu: a laptop experiment of an hour or two; paper: the paper's sizes, on GPUs",
    )
    overrides: list[Override] = Field(
        default_factory=list,
        description="settings that differ from the preset, one KEY=VALUE each, e.g. diffusion.train.steps=500 "
                    "(KEY: a field of the configuration, dotted)",
    )
    config: ExperimentConfig | None = Field(None, description="a complete configuration, instead of preset and overrides")
    force: list[ForcedStage] = Field(
        default_factory=list, description="stages to run again although a finished run with the same inputs exists",
    )
    methods: list[str] = Field(
        default_factory=list, json_schema_extra=offer_preset_methods,
        description="rollout methods to train and evaluate (none chosen: every method of the configuration)",
    )
    time_limit_minutes: float | None = Field(
        None, gt=0,
        description="minutes after the start at which training pauses at a checkpoint; "
                    "running the same parameters again continues from there",
    )
    _resolved: ExperimentConfig = PrivateAttr()

    @classmethod
    def from_loaded(cls, loaded: ExperimentConfig, **fields: Any) -> PipelineParams:
        """The params of `fields` whose configuration the caller has just loaded (`loaded` is
        `load_config(preset, overrides)`, or `config` itself), so that it is not loaded again."""
        return cls.model_validate(fields, context={"loaded": loaded})

    @model_validator(mode="after")
    def _resolves(self, info: ValidationInfo) -> PipelineParams:
        """Everything the configuration alone decides fails here, before Ray or any stage starts.
        The configuration is loaded once per object: Prefect validates the object it is given again."""
        if getattr(self, "_resolved", None) is not None:
            return self
        if self.config is not None and self.overrides:
            raise ValueError("overrides apply to a preset; with a complete config, change the config itself")
        from millivid_platform.preflight import check_methods  # it imports this module

        config = self.config if self.config is not None else (info.context or {}).get("loaded")
        if config is None:
            config = load_config(self.preset, self.overrides)
        check_methods(config, self.methods)
        self._resolved = config
        return self

    def resolve(self) -> ExperimentConfig:
        return self._resolved

    @property
    def label(self) -> str:
        """What the run runs, for run names: the preset and its overrides, e.g. 'smoke eval.bootstrap=60'."""
        if self.config is None:
            parts = [self.preset, *self.overrides]
        else:
            parts = [f"{self.config.name} (config {config_hash(self.config)[:8]})"]
        if self.methods:
            parts.append(f"methods={','.join(self.methods)}")
        label = " ".join(parts)
        return label if len(label) <= RUN_LABEL_LIMIT else label[: RUN_LABEL_LIMIT - 1] + "…"


def pause_message(paused: StagePaused, params: PipelineParams) -> str:
    """Where training stopped and how to go on (forcing again would restart the paused stage)."""
    again = "the same parameters but no force" if params.force else "the same parameters"
    return f"paused: {paused} after the {params.time_limit_minutes:g}-minute limit; run it again with {again} to continue"


@contextlib.contextmanager
def open_pipeline(
    settings: PlatformSettings, params: PipelineParams, run_name: str = "pipeline"
) -> Iterator[tuple[PipelineContext, ExperimentConfig]]:
    """Start the parent MLflow run; close it with the pipeline's outcome. (Ray starts with the first
    stage that runs: `stages.execute`.)

    The time limit counts from here: its deadline is fixed now and travels to every stage.
    Every run of the pipeline (parent and stages) is named `<what> · <params.label>` and carries
    the same source tags, so runs of different experiments tell themselves apart in MLflow.
    """
    import mlflow

    deadline = time.time() + 60 * params.time_limit_minutes if params.time_limit_minutes else None
    config = params.resolve()
    object_store.check_reachable(settings.resolved_storage_root)  # a store that is down: one clear error, now
    experiment_id = tracking.configure(settings)
    run_tags = {
        "millivid.preset": params.preset if params.config is None else "none",
        "millivid.config_name": config.name,
        "millivid.run_label": params.label,
        **tracking.source_tags(run_name),  # the flow (or command) that ran it; MLflow shows a job icon beside it
        **prefect_run_tags(),
    }
    parent = tracking.create_run(experiment_id, f"{run_name} · {params.label}", "pipeline", config, None, run_tags)
    tracking.log_config(config, parent)
    ctx = PipelineContext(settings, experiment_id, parent, frozenset(params.force), deadline,
                          config=config, run_label=params.label, run_tags=run_tags)
    log.info("pipeline %s: config %s, MLflow run %s", params.label, config_hash(config),
             tracking.run_url(settings, experiment_id, parent))
    try:
        yield ctx, config
    except StagePaused as paused:
        mark_paused(parent, paused)
        raise
    except BaseException:
        mlflow.MlflowClient().set_terminated(parent, "FAILED")
        raise
    mlflow.MlflowClient().set_terminated(parent, "FINISHED")


def probe_context(settings: PlatformSettings, params: PipelineParams) -> tuple[PipelineContext, ExperimentConfig]:
    """A context in which stages return what a run of `params` would reuse, recording nothing (no
    parent run, no cached runs), or raise `CacheMiss` at the first stage that would run."""
    config = params.resolve()
    object_store.check_reachable(settings.resolved_storage_root)  # as open_pipeline: a store that is down, one error
    return PipelineContext(settings, tracking.configure(settings), force=frozenset(params.force), probe=True), config


def prefect_run_tags() -> dict[str, str]:
    """The Prefect flow run this pipeline runs in (and its page, with a Prefect server), for MLflow."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    if flow_run.id is None:
        return {"millivid.prefect_flow_run": "none"}
    tags = {"millivid.prefect_flow_run": str(flow_run.id)}
    if PREFECT_UI_URL.value():  # none for Prefect's temporary server, which is gone after the run
        tags["millivid.prefect_flow_run_url"] = f"{PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.id}"
    return tags


def log_headline_metrics(ctx: PipelineContext, evaluation: StageResult, methods: list[str]) -> dict[str, float]:
    """Put the evaluation's headline numbers on the pipeline's own run (the MLflow compare view's
    "effect" next to the params' "cause"; not with a probing context); returns them as
    `<key>/<method>` -> value."""
    metrics = headline_metrics(evaluation, methods)
    if ctx.probe:  # a probe records nothing
        return metrics
    holds = metrics.get("headline_holds")
    tracking.log_metrics(metrics, step=0, run_id=ctx.parent_run_id)
    tracking.set_tags({"millivid.headline": "n/a" if holds is None else "holds" if holds else "does not hold"},
                      ctx.parent_run_id)
    return metrics


def headline_metrics(evaluation: StageResult, methods: list[str]) -> dict[str, float]:
    """The evaluation's headline numbers as `<key>/<method>` -> value, and `headline_holds` (1 or 0)
    when the summary has a verdict."""
    from millivid import storage
    from millivid_platform.evaluation_stage import summary_numbers

    summary = storage.read_json(storage.join(evaluation.outputs["evaluation_uri"], "summary.json"))
    metrics = {f"{key}/{name}": value for name, key, value in summary_numbers(summary)
               if name in methods and key in HEADLINE_KEYS and value is not None}
    headline = summary.get("headline")
    if headline is not None:
        metrics["headline_holds"] = float(headline["holds"])
    return metrics
