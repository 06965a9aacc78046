"""Configuration of the hierarchical autoencoder and its training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from millivid.schema import Frozen, TrainConfig


class LpipsConfig(Frozen):
    """Which LPIPS backbone to use; `random` is an explicit, logged fallback for offline machines."""

    net: Literal["alex", "vgg"] = "vgg"
    backbone: Literal["auto", "pretrained", "random"] = Field(
        "auto",
        description="pretrained: torchvision weights from the hub cache or weights_path (error if absent); "
        "random: random backbone; auto: pretrained when found, else random with a warning and an MLflow tag",
    )
    weights_path: str | None = Field(None, description="file or URI of the torchvision backbone state dict")


class AutoencoderModelConfig(Frozen):
    patch: int = Field(4, ge=1, description="patch side in pixels, the same at every level")
    levels: int = Field(4, ge=1, description="pyramid levels; level l has 4^-l of the finest tokens")
    latent_channels: int = Field(16, ge=1, description="channels per latent token (c)")
    width: int = Field(128, ge=8)
    encoder_depth: int = Field(2, ge=1)
    decoder_depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    variant: Literal["hierarchical", "downscaled"] = Field(
        "hierarchical",
        description="hierarchical: every level encoded jointly; downscaled: coarser latents are mean-pooled finest latents",
    )
    downscaled_training: Literal["decoder", "end_to_end"] = Field(
        "decoder",
        description="downscaled only. decoder: coarse levels' losses train the decoder alone, the encoder is a plain "
        "finest-level encoder whose latents are downscaled (the paper's ablation); end_to_end: they also train the "
        "encoder through the pooling, so it learns latents that survive it (a stronger baseline than the paper's)",
    )

    @model_validator(mode="after")
    def _width_fits_heads(self) -> AutoencoderModelConfig:
        # sin-cos positions split the width into row/column sin/cos quarters
        if self.width % 4:
            raise ValueError(f"width must be divisible by 4 (sin-cos positions), got {self.width}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self


class AutoencoderLossConfig(Frozen):
    level_weight_base: float = Field(
        4.0, ge=0, description="MSE of pyramid level l is weighted by base^l (the reference uses 4)"
    )
    lpips_weight: float = Field(0.05, ge=0)
    level_sampling_base: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="each example decodes level l with probability proportional to base^l "
        "(1: uniform; above 1 trains the coarse levels more often)"
    )


class AutoencoderConfig(Frozen):
    model: AutoencoderModelConfig = AutoencoderModelConfig()
    loss: AutoencoderLossConfig = AutoencoderLossConfig()
    lpips: LpipsConfig = LpipsConfig()
    train: TrainConfig = TrainConfig()
    compare_downscaled: bool = Field(
        False, description="also train the downscaled variant and compare the two level by level"
    )
