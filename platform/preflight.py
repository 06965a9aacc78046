"""Preflight: does the dataset hold what the stages that will run need, before they run?

Each stage needs episodes of some split with enough frames: the autoencoder trains on train
frames and evaluates on val frames; each diffusion method trains on train clips of its schedule's
span and evaluates on val clips of that span plus the rollout preview; the evaluation cuts windows
of eval.context + eval.rollout frames from eval.split. Without this check a mismatch surfaces
minutes later inside a Ray worker as a traceback. Checked twice:

    check_config(config, until, methods)           # before any stage: the methods, and a rendered
                                                   # dataset's shape, which the config alone decides
    check_dataset(config, uri, until, methods)     # after the data stage: the dataset itself

Both raise `DatasetMismatch` (a ConfigError: the CLI prints `error:` and exits 2) naming the
dataset, what it holds, what needs more, and the settings to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from millivid import storage
from millivid.config import ConfigError, ExperimentConfig
from millivid.data.generate import episode_id
from millivid.data.manifest import SPLITS, Split, assign_splits
from millivid.data.reader import load_manifest
from millivid_platform.pipeline import STAGES


class DatasetMismatch(ConfigError):
    """The dataset cannot feed the configured stages; the message says what to change."""


@dataclass(frozen=True)
class Need:
    split: Split
    frames: int  # some episode of the split has at least this many frames
    purpose: str  # who needs it, e.g. "diffusion:millivid's training (clips of its schedule's span)"
    shorter: str  # how to ask for fewer frames, e.g. "choose a shorter schedule in diffusion.methods.millivid"


def check_methods(config: ExperimentConfig, methods: Sequence[str] | None) -> None:
    swallowed = [name for name in methods or () if "=" in name]
    if swallowed:  # `--methods a b key=value` reads the overrides as method names: they would be lost
        raise ConfigError(f"--methods: {', '.join(map(repr, swallowed))} look like overrides, not method names; "
                          "put KEY=VALUE overrides before --methods")
    unknown = [name for name in methods or () if name not in config.diffusion.methods]
    if unknown:
        raise ConfigError(f"--methods: {', '.join(map(repr, unknown))} not in diffusion.methods of config "
                          f"{config.name!r}; choose from {', '.join(config.diffusion.methods)}")
    repeated = sorted({name for name in methods or () if list(methods).count(name) > 1})
    if repeated:
        raise ConfigError(f"--methods: {', '.join(map(repr, repeated))} given more than once")


def needs(config: ExperimentConfig, until: str, methods: Sequence[str] | None = None) -> list[Need]:
    """What the stages up to `until` need from the dataset."""
    from millivid_platform.diffusion_stage import PREVIEW_FRAMES

    runs = set(STAGES[: STAGES.index(until) + 1])
    found: list[Need] = []
    if "autoencoder" in runs:
        found += [Need("train", 1, "the autoencoder's training", ""), Need("val", 1, "the autoencoder's held-out evaluation", "")]
        if config.autoencoder.compare_downscaled:
            found.append(Need("test", 1, "the hierarchical-vs-downscaled comparison", ""))
    if "diffusion" in runs:
        for name in methods or config.diffusion.methods:
            span, shorter = config.schedules[name].span, f"choose a shorter schedule in diffusion.methods.{name}"
            found += [Need("train", span, f"diffusion:{name}'s training (clips of its schedule's span)", shorter),
                      Need("val", span + PREVIEW_FRAMES, f"diffusion:{name}'s held-out evaluation (clips of its span "
                           f"and a {PREVIEW_FRAMES}-frame rollout preview)", shorter)]
    if "evaluate" in runs:
        rules = config.eval
        found.append(Need(rules.split, rules.context + rules.rollout, "the evaluation (windows of eval.context + eval.rollout)",
                          "lower eval.context or eval.rollout"))
    return found


def check_config(config: ExperimentConfig, until: str, methods: Sequence[str] | None = None) -> None:
    """Everything the config alone decides: the methods asked for, where the data comes from, and
    for a rendered dataset (episode count, length and splits are settings) whether it will fit."""
    check_methods(config, methods)
    if not config.diffusion.methods and STAGES.index(until) >= STAGES.index("diffusion"):
        raise ConfigError(f"diffusion.methods of config {config.name!r} is empty: nothing to train or evaluate "
                          f"(--until {until}); give at least one method")
    data = config.data
    if data.source == "import":
        if not storage.exists(data.import_uri):
            raise ConfigError(f"data.import_uri: {data.import_uri} does not exist")
        return  # what the episodes hold is known once they are imported
    ids = [episode_id(index) for index in range(data.episodes)]
    splits = assign_splits(ids, data.split)
    lengths = {split: [data.frames for eid in ids if splits[eid] == split] for split in SPLITS}
    where = f"the dataset config {config.name!r} renders (data.episodes={data.episodes}, data.frames={data.frames})"
    report(where, lengths, needs(config, until, methods), config)


def check_dataset(config: ExperimentConfig, uri: str, until: str, methods: Sequence[str] | None = None) -> None:
    manifest = load_manifest(uri)
    lengths = {split: [e.length for e in manifest.episodes if e.split == split] for split in SPLITS}
    origin = f" (imported from data.import_uri {config.data.import_uri})" if config.data.source == "import" else ""
    report(f"dataset {uri}{origin}", lengths, needs(config, until, methods), config)


def report(where: str, lengths: Mapping[str, list[int]], wanted: list[Need], config: ExperimentConfig) -> None:
    """Raise DatasetMismatch listing every need the split lengths do not meet (an empty split once)."""
    unmet = [need for need in wanted if max(lengths[need.split], default=0) < need.frames]
    first_of_empty = {need.split: need for need in reversed(unmet) if not lengths[need.split]}
    problems = [problem(need, lengths, config) for need in unmet if lengths[need.split] or first_of_empty[need.split] is need]
    if problems:
        counts = ", ".join(f"{len(lengths[split])} {split}" for split in SPLITS)
        raise DatasetMismatch("\n  ".join([f"{where} does not fit the stages that would run ({counts} episodes):", *problems]))


def problem(need: Need, lengths: Mapping[str, list[int]], config: ExperimentConfig) -> str:
    episodes, imported = lengths[need.split], config.data.source == "import"
    total = sum(len(lengths[split]) for split in SPLITS)
    if not episodes and total < len(SPLITS):  # no split fractions can help: too few episodes to go round
        more = "import more episodes" if imported else "raise data.episodes"
        return (f"the {need.split} split has no episodes, and {need.purpose} needs one: the dataset has {total} "
                f"episode(s) in all, fewer than its {len(SPLITS)} splits; {more}")
    if not episodes:
        more = "import more episodes or raise" if imported else "raise data.episodes or"
        split = "lower data.split.val / data.split.test" if need.split == "train" else f"data.split.{need.split}"
        return (f"the {need.split} split has no episodes, and {need.purpose} needs one: {more} {split} "
                f"(data.split is {config.data.split.model_dump(exclude={'seed'})})")
    longer = "import longer episodes" if imported else "raise data.frames"
    return (f"the longest {need.split} episode has {max(episodes)} frames, and {need.purpose} needs {need.frames} frames: "
            f"{longer} or {need.shorter}")
