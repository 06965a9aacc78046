"""The headline experiment of a preset on one device, end to end, with the science package only.

`millivid bench headline --json [--preset cpu]` renders the preset's dataset to a local folder,
trains the hierarchical autoencoder, encodes latents, trains one diffusion transformer per method
of `diffusion.methods` and evaluates them with `millivid.eval` (every reference line, revisit
frames within and out of reach, per-level latent memory, the headline verdict), writing the
evaluation's outputs (summary.json, Parquet tables, plots, strips, videos) under
`<out>/evaluation`. No Prefect, Ray or MLflow is imported: it runs on a bare GPU machine.

On CUDA the transformers train concurrently, one spawned process per model sharing the GPU (the
models are far too small to fill it, so three Python processes launch kernels side by side); on
the CPU they train one after the other in this process. Training is bf16 autocast
(`compute.precision`); nothing is compiled.

Time budget (`MILLIVID_HEADLINE_MINUTES`, default 10, for everything): a quarter is kept for the
evaluation. Each model first runs its first WARMUP_STEPS steps, timed (the transformers all at
once, as they then train); from that rate its step count is the config's (`*.train.steps`, the
most it runs; raise it with an override) or what fits: the autoencoder in at most AE_SHARE of the
training time left, the transformers, all the same number of steps, in the rest. Training then
resumes from the warm-up's checkpoint: batches and noise depend on the step alone, and the
learning rate of steps within the LR warm-up (longer than WARMUP_STEPS in the cpu and paper
presets) not on the total, so each model trains exactly as an uninterrupted run of its step count
would. A model still training when its share is overspent stops at its next log step
(`stopped_early` in the result). The result says the steps used and why.

Other knobs: `MILLIVID_HEADLINE_OVERRIDES`, space-separated dotted overrides (e.g.
"diffusion.train.steps=30000 eval.examples=32"; run()'s `overrides` come after them), and
`MILLIVID_HEADLINE_OUT`, the output folder (default: a new temporary folder).
`--quick`: the smoke preset, a few steps, two examples: a check that the whole path works.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from millivid.ae.codec import LatentCodec
from millivid.ae.encode import encode_dataset
from millivid.ae.frames import StoreFrames
from millivid.ae.model import HierarchicalAutoencoder
from millivid.ae.task import AutoencoderTask
from millivid.config import ExperimentConfig, load_config
from millivid.data.generate import render_dataset
from millivid.data.reader import open_dataset
from millivid.diffusion.dit import build_dit
from millivid.eval.compare import evaluate_methods
from millivid.eval.methods import DiffusionMethod
from millivid.eval.protocol import EvalData, draw_examples
from millivid.eval.references import standard_references
from millivid.experiment import diffusion_task, token_budget, training_revisits
from millivid.schema import Precision, TrainConfig
from millivid.training import Hooks, Task, fit
from millivid_bench.gpu import device_facts

log = logging.getLogger(__name__)

MINUTES_ENV, OVERRIDES_ENV, OUT_ENV = "MILLIVID_HEADLINE_MINUTES", "MILLIVID_HEADLINE_OVERRIDES", "MILLIVID_HEADLINE_OUT"
DEFAULT_MINUTES = 10.0
EVALUATION_SHARE = 0.25  # of the budget, kept for the evaluation
AE_SHARE = 0.2  # the autoencoder's most of the training time left after its warm-up
WARMUP_STEPS = 30  # timed steps before the step counts are set (within both presets' LR warm-up)
QUICK_WARMUP_STEPS = 2
QUICK = ["autoencoder.train.steps=4", "diffusion.train.steps=3", "diffusion.sampler.steps=2",
         "eval.examples=2", "eval.context=48", "eval.rollout=32", "eval.videos=1"]  # smoke: windows with revisits
NEVER = 10**9  # steps between evaluations / checkpoints we do not want before the last step
REVISIT_SUBSETS = ("revisit", "revisit_within_reach", "revisit_out_of_reach")


def run(quick: bool = False, preset: str | None = None, overrides: Sequence[str] = (), out: str | None = None) -> dict[str, Any]:
    preset, overrides = preset or ("smoke" if quick else "cpu"), experiment_overrides(quick, overrides)
    config = load_config(preset, overrides)
    budget = Budget.start(float(os.environ.get(MINUTES_ENV, DEFAULT_MINUTES)))
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    folder = Path(out or os.environ.get(OUT_ENV) or tempfile.mkdtemp(prefix="millivid-headline-")).resolve()
    dataset_uri, latents_uri = str(folder / "dataset"), str(folder / "latents")
    warmup = QUICK_WARMUP_STEPS if quick else WARMUP_STEPS
    phases: dict[str, float] = {}
    with timed(phases, "data"):
        render_dataset(config.data, dataset_uri)
    with timed(phases, "schedules"):
        schedules = {name: schedule_numbers(config, name, dataset_uri) for name in config.diffusion.methods}
    with timed(phases, "autoencoder"):
        autoencoder, ae_training = train_autoencoder(config, dataset_uri, device, budget, warmup)
    with timed(phases, "encode"):
        encode_dataset(autoencoder, open_dataset(dataset_uri), latents_uri, config.data.shard_frames, config.compute.precision)
    with timed(phases, "diffusion"):
        jobs = [MethodJob(preset, tuple(overrides), name, latents_uri, str(folder / "models" / name), str(device), warmup)
                for name in config.diffusion.methods]
        models, dit_training = train_diffusion(config, jobs, device, budget)
    with timed(phases, "evaluation"):
        summary, written = evaluate(config, dataset_uri, latents_uri, autoencoder, models, device, str(folder / "evaluation"))
    phases["total"] = sum(phases.values())
    return {
        "benchmark": "headline",
        "quick": quick,
        "preset": preset,
        "overrides": overrides,
        "device": describe_device(device),
        "precision": config.compute.precision,
        "budget": budget.describe(),
        "phase_seconds": phases,
        "autoencoder": ae_training,
        "diffusion": dit_training,
        "schedules": schedules,
        **headline_numbers(summary),
        "outputs": {"folder": str(folder), "evaluation": sorted(written)},
    }


def experiment_overrides(quick: bool, given: Sequence[str]) -> list[str]:
    """--quick's sizes, then the environment's overrides, then the caller's (the last word wins)."""
    return [*(QUICK if quick else []), *shlex.split(os.environ.get(OVERRIDES_ENV, "")), *given]


# --- time ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Wall-clock budget of the whole run (time.time(), so worker processes share it)."""

    started: float
    seconds: float

    @classmethod
    def start(cls, minutes: float) -> Budget:
        if not minutes > 0:
            raise ValueError(f"{MINUTES_ENV} must be a positive number of minutes, got {minutes}")
        return cls(time.time(), 60 * minutes)

    @property
    def training_ends(self) -> float:
        """When training must be done for the evaluation to have its share."""
        return self.started + self.seconds * (1 - EVALUATION_SHARE)

    def training_left(self) -> float:
        return max(0.0, self.training_ends - time.time())

    def describe(self) -> dict[str, float]:
        return {"minutes": self.seconds / 60, "evaluation_share": EVALUATION_SHARE, "autoencoder_share": AE_SHARE}


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - start
    log.info("%s done in %.1f s", name, phases[name])


class StepClock:
    """Progress hook: the time of every reported step, and the last metrics."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.times: list[float] = []
        self.metrics: dict[str, float] = {}
        self.started = time.perf_counter()

    def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
        self.steps.append(step)
        self.times.append(time.perf_counter())
        self.metrics = metrics

    def seconds_per_step(self) -> float:
        """Between the first and the last report (the first holds start-up and first-call costs)."""
        if len(self.steps) > 1:
            return (self.times[-1] - self.times[0]) / (self.steps[-1] - self.steps[0])
        return (self.times[-1] - self.started) / self.steps[-1]


def plan_steps(cap: int, done: int, seconds_per_step: float, seconds: float) -> tuple[int, str]:
    """Total steps (at least the `done` warm-up steps, at most `cap`) that fit in `seconds` more, and why."""
    fits = done + int(seconds / seconds_per_step)
    rate = f"{seconds_per_step * 1000:.1f} ms per step (measured over the warm-up)"
    if fits >= cap:
        return cap, f"the config's {cap} steps fit in the {seconds:.0f} s left at {rate}"
    steps = max(done, fits)
    return steps, f"{steps} of the config's {cap} steps fit in the {seconds:.0f} s left at {rate}"


# --- training --------------------------------------------------------------------------------


def warm_up(task: Task, train: TrainConfig, steps: int, device: torch.device, precision: Precision,
            ready: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], float]:
    """About the first `steps` steps of `train` (fewer than all of them), timed: (their checkpoint
    state, seconds per step). `ready` is called just before training starts (concurrent models start together)."""
    every = max(1, min(steps, train.steps - 1) // 3)  # reports (host syncs) bracket the timed steps
    steps = every * max(1, min(steps, train.steps - 1) // every)
    clock, saved = StepClock(), {}
    cfg = train.model_copy(update={"log_every": every, "eval_every": NEVER, "checkpoint_every": NEVER})
    hooks = Hooks(progress=clock, checkpoint=lambda step, state: saved.update(state=state), stop=lambda step: step >= steps)
    ready()
    fit(task, cfg, precision=precision, device=device, hooks=hooks)
    return saved["state"], clock.seconds_per_step()


def finish(task: Task, train: TrainConfig, steps: int, state: dict[str, Any], device: torch.device, precision: Precision,
           deadline: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train from the warm-up's `state` to `steps`, or to the first log step past `deadline` (time.time())."""
    clock, held_out = StepClock(), {}
    cfg = train.model_copy(update={"steps": steps, "eval_every": NEVER, "checkpoint_every": NEVER})
    hooks = Hooks(progress=clock, evaluation=lambda step, result: held_out.update(result.metrics), stop=lambda step: time.time() > deadline)
    model = fit(task, cfg, precision=precision, device=device, hooks=hooks, state=state)
    done = clock.steps[-1] if clock.steps else int(state["step"])
    return model, {
        "steps": done,
        "planned_steps": steps,
        "warmup_steps": int(state["step"]),
        "stopped_early": done < steps,
        "train_seconds": time.perf_counter() - clock.started + float(state["train_seconds"]),
        "last_train_loss": clock.metrics.get("train/loss"),
        "held_out": held_out or None,  # fit's evaluation at the last step; None when stopped early
    }


def with_rate(stats: dict[str, Any], seconds_per_step: float) -> dict[str, Any]:
    return {**stats, "steps_per_s": stats["steps"] / stats["train_seconds"], "warmup_seconds_per_step": seconds_per_step}


def train_autoencoder(config: ExperimentConfig, dataset_uri: str, device: torch.device, budget: Budget,
                      warmup: int) -> tuple[HierarchicalAutoencoder, dict[str, Any]]:
    """As the pipeline's `autoencoder` stage builds its task, on `device` in this process."""
    task = AutoencoderTask(config.autoencoder, config.data.size, StoreFrames(open_dataset(dataset_uri)))
    train, precision = config.autoencoder.train, config.compute.precision
    state, seconds_per_step = warm_up(task, train, warmup, device, precision)
    steps, why = plan_steps(train.steps, int(state["step"]), seconds_per_step, AE_SHARE * budget.training_left())
    model, stats = finish(task, train, steps, state, device, precision, deadline=budget.training_ends)
    why += f"; the autoencoder gets at most {AE_SHARE:.0%} of the training time"
    return model.eval(), {**with_rate(stats, seconds_per_step), "steps_reason": why}


@dataclass(frozen=True)
class MethodJob:
    """One diffusion transformer's training, as a worker process gets it (the config is rebuilt there)."""

    preset: str
    overrides: tuple[str, ...]
    method: str
    latents_uri: str
    folder: str  # its warm-up checkpoint and final weights
    device: str
    warmup: int
    steps: int = 0  # set once the warm-up has measured the rate
    deadline: float = math.inf  # time.time() after which it stops at its next log step

    def config(self) -> ExperimentConfig:
        return load_config(self.preset, list(self.overrides))

    def file(self, name: str) -> str:
        return str(Path(self.folder) / name)


_PEERS: Any = None  # a multiprocessing Barrier in each worker process of concurrent training


def join_workers(peers: Any, threads: int) -> None:
    """Worker process initializer: the barrier the concurrent warm-ups wait at, and a share of the CPU threads."""
    global _PEERS
    _PEERS = peers
    torch.set_num_threads(threads)


def wait_for_peers() -> None:
    if _PEERS is not None:
        _PEERS.wait(timeout=600)


def warm_up_method(job: MethodJob) -> tuple[int, float]:
    """Worker: the job's warm-up, saved for `train_method`; returns (steps done, seconds per step)."""
    config = job.config()
    try:
        task = diffusion_task(config, job.method, open_dataset(job.latents_uri))
    except BaseException:
        if _PEERS is not None:
            _PEERS.abort()  # the others stop waiting for this one
        raise
    state, seconds_per_step = warm_up(task, config.diffusion.train, job.warmup, torch.device(job.device),
                                      config.compute.precision, ready=wait_for_peers)
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    torch.save(state, job.file("warmup.pt"))
    return int(state["step"]), seconds_per_step


def train_method(job: MethodJob) -> dict[str, Any]:
    """Worker: from the warm-up's checkpoint to `job.steps`; saves the weights, returns the training numbers."""
    config = job.config()
    task = diffusion_task(config, job.method, open_dataset(job.latents_uri))
    state = torch.load(job.file("warmup.pt"), map_location="cpu", weights_only=False)  # our own file
    model, stats = finish(task, config.diffusion.train, job.steps, state, torch.device(job.device), config.compute.precision, job.deadline)
    torch.save(model.state_dict(), job.file("model.pt"))
    return stats


@contextlib.contextmanager
def method_workers(count: int, concurrent: bool) -> Iterator[Callable[[Callable, list], list]]:
    """A `map` over jobs: `count` spawned processes at once (sharing one GPU), or one after the other here."""
    if not concurrent:
        yield lambda function, jobs: [function(job) for job in jobs]
        return
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // count)
    with ProcessPoolExecutor(count, mp_context=context, initializer=join_workers, initargs=(context.Barrier(count), threads)) as pool:
        yield lambda function, jobs: list(pool.map(function, jobs))


def train_diffusion(config: ExperimentConfig, jobs: list[MethodJob], device: torch.device,
                    budget: Budget) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Every method's transformer, all the same number of steps; concurrently on CUDA."""
    concurrent = device.type == "cuda" and len(jobs) > 1
    with method_workers(len(jobs), concurrent) as run_all:
        warmed = run_all(warm_up_method, jobs)
        steps, why = plan_diffusion_steps(config.diffusion.train, warmed, concurrent, budget)
        deadline = budget.training_ends + EVALUATION_SHARE * budget.seconds / 2  # overrun: half the evaluation's share
        stats = run_all(train_method, [replace(job, steps=steps, deadline=deadline) for job in jobs])
    per_method = {job.method: {**with_rate(numbers, seconds_per_step), "tokens_per_step": config.schedules[job.method].max_tokens}
                  for job, (_, seconds_per_step), numbers in zip(jobs, warmed, stats, strict=True)}
    return {job.method: load_method(config, job) for job in jobs}, {
        "trained": "concurrently, one process per model on one GPU" if concurrent else "one after the other",
        "batch_size": config.diffusion.train.batch_size,
        "steps": steps,
        "steps_reason": why,
        "per_method": per_method,
    }


def plan_diffusion_steps(train: TrainConfig, warmed: list[tuple[int, float]], concurrent: bool, budget: Budget) -> tuple[int, str]:
    """One step count for every method, from each one's (warm-up steps, seconds per step)."""
    done, seconds = zip(*warmed, strict=True)
    steps, why = plan_steps(train.steps, max(done), max(seconds) if concurrent else sum(seconds), budget.training_left())
    per_round = "the slowest model's step, as they train at once" if concurrent else "every model's step, one after the other"
    return steps, f"{why}; a step here is a round of every method's step: {per_round}"


def load_method(config: ExperimentConfig, job: MethodJob) -> torch.nn.Module:
    schedule = config.schedules[job.method]
    model = build_dit(config.diffusion.model, config.autoencoder.model.latent_channels, schedule.tokens_per_level, schedule.context_source)
    model.load_state_dict(torch.load(job.file("model.pt"), map_location="cpu", weights_only=True))
    return model.eval()


# --- evaluation and result -------------------------------------------------------------------


def evaluate(config: ExperimentConfig, dataset_uri: str, latents_uri: str, autoencoder: HierarchicalAutoencoder,
             models: dict[str, torch.nn.Module], device: torch.device, uri: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every method and reference line on the same test examples, rollouts on `device` (as the
    pipeline's `evaluate` stage, in one process); writes the outputs under `uri`."""
    data = EvalData(open_dataset(dataset_uri), open_dataset(latents_uri))
    precision = config.compute.precision
    codec = LatentCodec(autoencoder.to(device), precision)
    methods = {name: DiffusionMethod(model.to(device), config.schedules[name], config.diffusion.sampler, codec.decode, codec.reencode, precision)
               for name, model in models.items()}
    budget = token_budget(config.schedules[name] for name in models)
    examples = draw_examples(data.frames, config.eval)
    result = evaluate_methods(examples, methods, standard_references(data, config.eval, codec.decode), data, config.eval, budget=budget)
    return result.summary, result.write(uri)


def schedule_numbers(config: ExperimentConfig, method: str, dataset_uri: str) -> dict[str, Any]:
    """Reach, tokens per step, and how often its training clips revisit their own context
    (the evaluation's revisit rule, over the clip's first denoised column; as the pipeline logs it)."""
    schedule = config.schedules[method]
    share = training_revisits(config, method, open_dataset(dataset_uri))
    return {
        "reach": schedule.reach.describe(),
        "tokens_per_step": schedule.max_tokens,
        "steps_per_chunk": len(schedule.steps),
        "new_frames_per_chunk": schedule.stride,
        "chunk_frames": schedule.span,
        "training_clip_revisits": asdict(share),
    }


def headline_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """What one reads first in summary.json: consistency per line, latent memory, the verdict."""
    headline = summary["headline"]
    verdict = "n/a" if headline is None else "holds" if headline["holds"] else "does not hold"
    return {
        "examples": len(summary["protocol"]["windows"]),
        "lpips_backbone": summary["lpips_backbone"],
        "fvd": summary["fvd"],
        "consistency": {name: line_numbers(entry) for name, entry in summary["per_method"].items()},
        "latent_memory": summary["latent_memory"],
        "headline": {"verdict": verdict, **(headline or {})},
        "budget_warnings": summary["budget"]["warnings"],
    }


def line_numbers(entry: dict[str, Any]) -> dict[str, Any]:
    """One method's or reference's LPIPS / PSNR / SSIM on revisit frames (all, within, out of reach) and last-half LPIPS."""
    return {
        "reference": entry["reference"],
        "reach": entry["reach"],
        "last_half_lpips": entry["last_half"]["lpips"],
        **{subset: entry[subset] for subset in REVISIT_SUBSETS},
    }


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return device_facts(device)
    return {"name": "cpu", "torch": torch.__version__, "cuda": None, "threads": torch.get_num_threads()}
