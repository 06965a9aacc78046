"""The experiment configuration: one frozen, typed model loaded from a YAML preset plus overrides.

    cfg = load_config("smoke", ["autoencoder.model.width=64"])
    cfg.autoencoder.model.width      # 64
    config_hash(cfg.autoencoder)     # stable hash of a section, for caching and lineage
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from millivid.ae.config import AutoencoderConfig
from millivid.data.config import DataConfig
from millivid.diffusion.config import DiffusionConfig
from millivid.diffusion.schedule_core import Schedule, ScheduleError
from millivid.diffusion.schedules import build_schedule
from millivid.eval.config import RESERVED_NAMES, EvalConfig
from millivid.geometry import LevelGeometry, geometry_problem
from millivid.schema import ComputeConfig, Frozen

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("smoke", "cpu", "paper")
METHOD_NAME = re.compile(r"[A-Za-z0-9_-]+")  # safe in MLflow metric keys, file names and dotted overrides


class ConfigError(ValueError):
    """A configuration that cannot be loaded; the message names the field, the value and what was expected."""


class ExperimentConfig(Frozen):
    name: str = Field("millivid", min_length=1)
    data: DataConfig = DataConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    eval: EvalConfig = EvalConfig()
    compute: ComputeConfig = ComputeConfig()
    _schedules: dict[str, Schedule] = PrivateAttr()

    @model_validator(mode="after")
    def _geometry_fits(self) -> ExperimentConfig:
        model = self.autoencoder.model
        problem = geometry_problem(self.data.size, model.patch, model.levels)
        if problem:
            raise ValueError(f"data.size / autoencoder.model.patch / autoencoder.model.levels: {problem}")
        self._schedules = {name: self._build_schedule(name) for name in self.diffusion.methods}
        self._headline_sees_revisits()
        self._sizes_fit_together()
        return self

    def _sizes_fit_together(self) -> None:
        """Settings that each look fine but cannot work together (they would fail or silently drop results later)."""
        if self.eval.fvd_chunk > self.eval.rollout:
            raise ValueError(f"eval.fvd_chunk / eval.rollout: FVD chunks of {self.eval.fvd_chunk} frames do not fit in a "
                             f"rollout of {self.eval.rollout}, so no method would get an FVD; lower eval.fvd_chunk or raise eval.rollout")
        for section in ("autoencoder", "diffusion"):
            batch = getattr(self, section).train.batch_size
            if batch < self.compute.workers:
                raise ValueError(f"{section}.train.batch_size / compute.workers: a batch of {batch} examples leaves some of the "
                                 f"{self.compute.workers} workers without any; raise the batch size or lower compute.workers")

    def _build_schedule(self, name: str) -> Schedule:
        where = f"diffusion.methods.{name}"
        if not METHOD_NAME.fullmatch(name):
            raise ValueError(f"{where}: a method name may hold only letters, digits, '_' and '-' (it names MLflow metrics and files)")
        if name in RESERVED_NAMES:
            raise ValueError(f"{where}: {name!r} is the name of a reference line of the evaluation; pick another")
        try:
            return build_schedule(self.diffusion.methods[name], self.geometry.tokens_per_level, name)
        except ScheduleError as err:
            raise ValueError(f"{where}: {err}") from None

    def _headline_sees_revisits(self) -> None:
        """A headline method that cannot see a revisited context frame cannot show memory."""
        headline = self._schedules.get(self.eval.headline_method)
        if headline is not None and headline.reach.overall < self.eval.revisit_min_gap:
            raise ValueError(
                f"eval.headline_method / eval.revisit_min_gap: {headline.name!r} sees {headline.reach.overall} frames back "
                f"(diffusion.methods.{headline.name}), fewer than the {self.eval.revisit_min_gap} frames that separate a "
                "revisit from the context frame it revisits, so no revisit is ever within its reach; "
                "give it a longer reach (windows / extra_budget) or lower eval.revisit_min_gap"
            )

    @property
    def geometry(self) -> LevelGeometry:
        return LevelGeometry(self.data.size, self.autoencoder.model.patch, self.autoencoder.model.levels)

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """Every method's rollout schedule, built once when the config was validated (read-only)."""
        return MappingProxyType(self._schedules)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ExperimentConfig:
        """A copy; with `update`, validated as a loaded config is (pydantic's copy would skip that and
        keep the original's schedules): every section's fields and checks again, from plain values
        (an updated section made with its own `model_copy` skipped its checks), and new schedules.

        Raises pydantic's ValidationError when the updated config does not hold together."""
        if not update:
            return super().model_copy(deep=deep)
        plain = {key: value.model_dump() if isinstance(value, BaseModel) else value for key, value in update.items()}
        return type(self).model_validate({**self.model_dump(), **plain})


def load_config(source: str | Path = "smoke", overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load a preset name (`smoke`, `cpu`, `paper`) or a YAML path, then apply `a.b=value` overrides."""
    path = preset_path(source)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate_config(apply_overrides(raw, overrides), origin=str(path))


def preset_path(source: str | Path) -> Path:
    if str(source) in PRESETS:
        return CONFIG_DIR / f"{source}.yaml"
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config {source!r}: neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    return path


def validate_config(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, origin, raw)) from None


def describe_validation_error(err: ValidationError, origin: str = "config", raw: Any = None) -> str:
    """One line per problem, each naming its field as the user wrote it (`raw`, the validated input,
    when given: then a union member's tag that pydantic puts in the location is left out)."""
    lines = [f"{origin}: {err.error_count()} invalid value(s)"]
    for problem in err.errors():
        if not problem["loc"]:  # a check across fields: its message names them
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
            continue
        field = written_path(problem["loc"], raw)
        value = problem.get("input")
        shown = "(missing)" if problem["type"] == "missing" else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  field '{field}': got {shown}; expected: {problem['msg']}")
    return "\n".join(lines)


def written_path(loc: tuple[Any, ...], raw: Any) -> str:
    """A validation error's location as a dotted path of the keys in `raw`: a part that is no key of
    the input there while the next one is (or that is the input's `kind`) is the tag of a
    discriminated union's member (`diffusion.methods.fast.full_res.frames` -> `diffusion.methods.fast.frames`)."""
    parts, node = [], raw
    for index, part in enumerate(loc):
        following = loc[index + 1] if index + 1 < len(loc) else None
        if isinstance(node, dict) and part not in node and (following in node or part == node.get("kind")):
            continue
        parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `raw` with each `dotted.key=value` set; values are parsed as YAML."""
    result = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. autoencoder.model.width=128")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        set_dotted(result, key.strip(), value)
    return result


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"override {dotted!r}: '{where}' is a value, not a section")
        node = child
    node[leaf] = value


def canonical_json(config: Any) -> str:
    """Sorted-key, whitespace-free JSON of a config, a section, or a dict mixing them with values."""
    return json.dumps(to_jsonable_python(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(config: Any, length: int = 16) -> str:
    """Stable hash of a config (or a section of one): sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def dump_config(config: Frozen) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
