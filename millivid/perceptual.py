"""LPIPS with an explicit backbone source.

The `lpips` package ships its small linear heads; its AlexNet/VGG backbone comes from
torchvision's weights in the torch hub cache (or a configured file). Where those are absent,
`backbone: random` (or `auto`, which falls back to it) uses randomly initialised backbone
weights: a named, logged fallback, never a silent one.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

BackboneChoice = Literal["auto", "pretrained", "random"]
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
RANDOM_SEED = 0


class LpipsUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class BackboneStatus:
    net: str
    requested: str
    in_effect: Literal["pretrained", "random"]
    weights: str | None
    reason: str

    @property
    def tag(self) -> str:
        """Value of the `millivid.lpips_backbone` tag, e.g. 'alex:pretrained' or 'alex:random'."""
        return f"{self.net}:{self.in_effect}"


def hub_weights_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def backbone_status(net: str = "alex", backbone: BackboneChoice = "auto", weights_path: str | None = None) -> BackboneStatus:
    """Which backbone weights a given choice resolves to on this machine, and why."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"lpips net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    candidate = Path(weights_path).expanduser() if weights_path else hub_weights_path(net)
    found = candidate.is_file()
    if backbone == "random":
        return BackboneStatus(net, backbone, "random", None, "configured lpips.backbone=random")
    if found:
        return BackboneStatus(net, backbone, "pretrained", str(candidate), f"weights found at {candidate}")
    missing = f"{net} backbone weights not found at {candidate}"
    if backbone == "pretrained":
        raise LpipsUnavailable(
            f"{missing}; place torchvision's {BACKBONE_FILES[net]} there, set lpips.weights_path, "
            "or set lpips.backbone=random (an explicit fallback)"
        )
    return BackboneStatus(net, backbone, "random", None, f"fallback: {missing}")


class Lpips(nn.Module):
    """LPIPS distance of images in [0, 1] (b c h w); returns one distance per image (b,)."""

    def __init__(self, net: str = "alex", backbone: BackboneChoice = "auto", weights_path: str | None = None):
        super().__init__()
        import lpips

        self.status = backbone_status(net, backbone, weights_path)
        if self.status.in_effect == "random":
            message = f"LPIPS uses a RANDOM {net} backbone ({self.status.reason}); scores are not comparable to published LPIPS"
            warnings.warn(message, stacklevel=2)
            log.warning(message)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            torch.manual_seed(RANDOM_SEED)  # a random backbone is still the same random backbone everywhere
            self.inner = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if self.status.in_effect == "pretrained":
            load_backbone(self.inner.net, net, self.status.weights)
        self.inner.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if images.shape != reference.shape or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"lpips expects two (b 3 h w) batches of equal shape, got {tuple(images.shape)} and {tuple(reference.shape)}")
        distance = self.inner(images.float(), reference.float(), normalize=True)
        return distance.flatten()


def load_backbone(lpips_net: nn.Module, net: str, weights: str | None) -> None:
    """Copy torchvision backbone weights (a `features.N.*` state dict) into lpips' sliced network."""
    from torchvision import models

    reference = models.alexnet(weights=None) if net == "alex" else models.vgg16(weights=None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    reference.load_state_dict(state)
    for slice_ in (child for name, child in lpips_net.named_children() if name.startswith("slice")):
        for index, module in slice_.named_children():
            module.load_state_dict(reference.features[int(index)].state_dict())
