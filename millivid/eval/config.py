"""Configuration of the evaluation protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from millivid.schema import Frozen


class EvalConfig(Frozen):
    examples: int = Field(8, ge=1, description="test examples drawn from the test split")
    context: int = Field(64, ge=1, description="ground-truth context frames")
    rollout: int = Field(128, ge=1, description="generated frames after the context")
    seed: int = 0
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples for confidence intervals")
    fvd_chunk: int = Field(16, ge=2, description="frames per FVD chunk")
    lpips_backbone: Literal["auto", "pretrained", "random"] = Field(
        "auto", description="AlexNet backbone of the consistency LPIPS (see autoencoder.lpips.backbone)"
    )
    lpips_weights_path: str | None = None
    i3d_uri: str | None = Field(None, description="TorchScript I3D network (path or URI); absent -> FVD unavailable")
