"""The experiment configuration: one frozen, typed model loaded from a YAML preset plus overrides.

    cfg = load_config("smoke", ["autoencoder.model.width=64"])
    cfg.autoencoder.model.width      # 64
    config_hash(cfg.autoencoder)     # stable hash of a section, for caching and lineage
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from millivid.ae.config import AutoencoderConfig
from millivid.data.config import DataConfig
from millivid.diffusion.config import DiffusionConfig
from millivid.eval.config import EvalConfig
from millivid.geometry import LevelGeometry, geometry_problem
from millivid.schema import ComputeConfig, Frozen

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("smoke", "cpu", "paper")


class ConfigError(ValueError):
    """A configuration that cannot be loaded; the message names the field, the value and what was expected."""


class ExperimentConfig(Frozen):
    name: str = Field("millivid", min_length=1)
    data: DataConfig = DataConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    eval: EvalConfig = EvalConfig()
    compute: ComputeConfig = ComputeConfig()

    @model_validator(mode="after")
    def _geometry_fits(self) -> ExperimentConfig:
        model = self.autoencoder.model
        problem = geometry_problem(self.data.size, model.patch, model.levels)
        if problem:
            raise ValueError(f"data.size / autoencoder.model.patch / autoencoder.model.levels: {problem}")
        return self

    @property
    def geometry(self) -> LevelGeometry:
        return LevelGeometry(self.data.size, self.autoencoder.model.patch, self.autoencoder.model.levels)


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
        raise ConfigError(describe_validation_error(err, origin)) from None


def describe_validation_error(err: ValidationError, origin: str = "config") -> str:
    lines = [f"{origin}: {err.error_count()} invalid value(s)"]
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "<root>"
        value = problem.get("input")
        shown = "(missing)" if problem["type"] == "missing" else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  field '{field}': got {shown}; expected: {problem['msg']}")
    return "\n".join(lines)


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
