"""Shared building blocks of the typed, frozen experiment configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every config section: immutable, typed, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


Precision = Literal["bf16", "fp32"]


class TrainConfig(Frozen):
    """Optimisation settings shared by every trained stage."""

    steps: int = Field(200, ge=1, description="optimizer steps in total")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step, summed over workers")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    log_every: int = Field(10, ge=1, description="steps between metric logs")
    eval_every: int = Field(100, ge=1, description="steps between held-out evaluations")
    seed: int = 0


class ComputeConfig(Frozen):
    """Where training runs: Ray Train workers and their resources."""

    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    precision: Precision = Field("bf16", description="autocast dtype; bf16 on CPU (AVX512-BF16/AMX) and GPU")
    torch_threads: int = Field(0, ge=0, description="intra-op threads per worker; 0 = cpus_per_worker")
    max_failures: int = Field(
        2, ge=0, description="times a training run whose worker died restarts from its last checkpoint before it fails"
    )
    compile: bool = Field(False, description="wrap the trained model in torch.compile (speed only)")
    activation_checkpointing: bool = Field(
        False, description="recompute each transformer block's activations in the backward pass: less memory, more time"
    )

    def result_fields(self) -> dict[str, object]:
        """The fields that change what training computes (a cache key's share): not CPUs, threads,
        retries, compilation or activation checkpointing, which change only its speed and memory."""
        return self.model_dump(include={"workers", "use_gpu", "precision"})
