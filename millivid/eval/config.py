"""Configuration of the evaluation protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from millivid.schema import Frozen

# Names the evaluation gives its reference lines and the ground truth (millivid.eval.references,
# millivid.eval.tables); a method may not take one of them.
REFERENCE_NAMES = ("context_mean", "copy_last", "nearest_pose", "random_frames", "ground_truth_latents")
GROUND_TRUTH = "ground_truth"
RESERVED_NAMES = (*REFERENCE_NAMES, GROUND_TRUTH)


class EvalConfig(Frozen):
    examples: int = Field(8, ge=1, description="test examples drawn from the test split")
    context: int = Field(64, ge=1, description="ground-truth context frames")
    rollout: int = Field(128, ge=1, description="generated frames after the context")
    seed: int = 0
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples for confidence intervals")
    fvd_chunk: int = Field(16, ge=2, description="frames per FVD chunk")
    workers: int = Field(0, ge=0, description="Ray tasks the examples are split over; 0 = every available CPU")
    lpips_backbone: Literal["auto", "pretrained", "random"] = Field(
        "auto", description="AlexNet backbone of the consistency LPIPS (see autoencoder.lpips.backbone)"
    )
    lpips_weights_path: str | None = None
    i3d_uri: str | None = Field(None, description="TorchScript I3D network (path or URI); absent -> FVD unavailable")
    i3d_size: int = Field(224, ge=0, description="frame side the I3D input is resized to (0 = as generated)")
    split: Literal["train", "val", "test"] = Field("test", description="split the examples come from")
    select: Literal["random", "revisits"] = Field(
        "revisits", description="random windows, or the windows whose rollout revisits most context poses"
    )
    candidates: int = Field(256, ge=1, description="random windows ranked when select=revisits")
    min_revisit_share: float = Field(
        0.0, ge=0, le=1, description="skip windows whose rollout has a smaller share of revisit frames (select=revisits)"
    )
    min_start_gap: int = Field(16, ge=1, description="frames between starts of two examples of one episode")
    revisit_radius: float = Field(1.0, gt=0, description="camera distance (world units) that counts as the same place")
    revisit_angle: float = Field(30.0, gt=0, le=180, description="angle between view directions (yaw and pitch, degrees) that counts as the same view")
    revisit_min_gap: int = Field(32, ge=1, description="frames between a context frame and a rollout frame that revisits it")
    psnr_cap: float = Field(
        50.0, gt=0, description="PSNR (dB) cap: identical frames are infinite, and differences under 1/255 RMS are invisible"
    )
    headline_method: str = Field("millivid", description="the method the summary's headline tests against all others")
    rollout_batch: int = Field(8, ge=1, description="examples per rollout call")
    videos: int = Field(2, ge=0, description="examples shown as side-by-side videos and strips")
    video_context: int = Field(16, ge=0, description="last context frames shown before the rollout in videos")
    fps: int = Field(8, ge=1, description="frames per second of the side-by-side videos")
