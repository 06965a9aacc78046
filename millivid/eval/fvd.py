"""Fréchet Video Distance: I3D features of 16-frame chunks, one distance per chunk index.

The I3D network loads as TorchScript from a configured path or fsspec URI. Where it is absent,
FVD is reported unavailable with the reason, and a weight-free stand-in is reported instead:
"fvd_standin_randproj", the same Fréchet distance on features of a fixed-seed random 3-D conv
net. It ranks distribution shifts; its numbers are not FVD and not comparable to published FVD.

    networks = quality_networks(cfg)                   # {"fvd": I3D or absent, "fvd_standin_randproj": ...}
    features = video_features(net, chunks, size)       # chunks (b 3 t h w) in [0, 1] -> (b d)
    frechet_distance(generated_features, truth_features)

I3D input contract: (b 3 t h w) float in [-1, 1]. A network whose forward takes `rescale`,
`resize` and `return_features` (the common TorchScript I3D export) is called with
rescale=False, resize=True, return_features=True; any other is given frames resized to
eval.i3d_size and must return (b d) features.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from millivid import storage
from millivid.eval.config import EvalConfig

FVD = "fvd"
STANDIN = "fvd_standin_randproj"
STANDIN_SEED = 0
STANDIN_WIDTHS = (3, 16, 32, 64)
STANDIN_STRIDES = ((1, 2, 2), 2, 2)  # keep time at first: chunks can be short
RIDGE = 1e-6  # relative covariance regulariser: few samples give singular covariances


class I3DUnavailable(RuntimeError):
    pass


def i3d_status(uri: str | None) -> dict[str, Any]:
    if not uri:
        return {"available": False, "uri": None, "reason": "eval.i3d_uri is not set"}
    try:
        found = storage.exists(uri)
    except Exception as err:  # any fsspec driver error: report, don't crash the doctor
        return {"available": False, "uri": uri, "reason": f"cannot check {uri}: {err}"}
    if not found:
        return {"available": False, "uri": uri, "reason": f"no file at {uri}"}
    return {"available": True, "uri": uri, "reason": "found"}


def load_i3d(uri: str | None, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the TorchScript I3D feature network from a path or fsspec URI."""
    status = i3d_status(uri)
    if not status["available"]:
        raise I3DUnavailable(f"FVD unavailable: {status['reason']}")
    try:
        module = torch.jit.load(io.BytesIO(storage.read_bytes(uri)), map_location=device)
    except Exception as err:
        raise I3DUnavailable(f"FVD unavailable: {uri} is not a loadable TorchScript module ({err})") from err
    return module.eval()


class RandomVideoFeatures(nn.Module):
    """Fixed-seed random 3-D conv net: (b 3 t h w) in [-1, 1] -> (b 128): mean and std of its 64 last maps."""

    def __init__(self, seed: int = STANDIN_SEED):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers = zip(pairwise(STANDIN_WIDTHS), STANDIN_STRIDES, strict=True)
        self.convs = nn.ModuleList(nn.Conv3d(a, b, 3, stride=stride, padding=1) for (a, b), stride in layers)
        for conv in self.convs:
            fan_in = conv.weight[0].numel()
            conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
            conv.bias.data.zero_()
        self.requires_grad_(False).eval()

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        maps = videos
        for conv in self.convs:
            maps = F.relu(conv(maps))
        flat = rearrange(maps, "b c t h w -> b c (t h w)")
        return torch.cat([reduce(flat, "b c n -> b c", "mean"), flat.std(dim=-1, correction=0)], dim=1)


@dataclass(frozen=True)
class QualityNetworks:
    """Feature networks for the video-distribution distances, and whether real FVD is available."""

    networks: dict[str, nn.Module]  # metric name -> network; FVD only when I3D loaded
    fvd_status: dict[str, Any]  # available, uri, reason
    i3d_size: int
    device: torch.device

    def features(self, name: str, chunks: torch.Tensor) -> np.ndarray:
        """chunks: (b 3 t h w) in [0, 1] -> (b d) features of network `name`."""
        return video_features(self.networks[name], chunks.to(self.device), self.i3d_size if name == FVD else 0)


def quality_networks(cfg: EvalConfig, device: str | torch.device = "cpu") -> QualityNetworks:
    networks: dict[str, nn.Module] = {STANDIN: RandomVideoFeatures().to(device)}
    status = i3d_status(cfg.i3d_uri)
    if status["available"]:
        try:
            networks[FVD] = load_i3d(cfg.i3d_uri, device)
        except I3DUnavailable as err:
            status = {**status, "available": False, "reason": str(err)}
    return QualityNetworks(networks, status, cfg.i3d_size, torch.device(device))


def chunk_frames(frames: torch.Tensor, chunk: int) -> torch.Tensor:
    """(t 3 h w) -> (t // chunk, 3, chunk, h, w); a tail shorter than a chunk is dropped."""
    whole = frames.shape[0] // chunk * chunk
    return rearrange(frames[:whole], "(n t) c h w -> n c t h w", t=chunk)


@torch.no_grad()
def video_features(net: nn.Module, chunks: torch.Tensor, size: int = 0) -> np.ndarray:
    """chunks: (b 3 t h w) in [0, 1] -> (b d) float32 features (input scaled to [-1, 1])."""
    videos = chunks.float() * 2 - 1
    if takes_i3d_options(net):
        features = net(videos, rescale=False, resize=True, return_features=True)
    else:
        if size and videos.shape[-1] != size:
            frames = rearrange(videos, "b c t h w -> (b t) c h w")
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
            videos = rearrange(frames, "(b t) c h w -> b c t h w", b=chunks.shape[0])
        features = net(videos)
    if features.ndim != 2 or features.shape[0] != chunks.shape[0]:
        raise ValueError(f"video feature network must return (b d) features, got shape {tuple(features.shape)}")
    return features.float().cpu().numpy()


def takes_i3d_options(net: nn.Module) -> bool:
    schema = getattr(getattr(net, "forward", None), "schema", None)
    names = {argument.name for argument in schema.arguments} if schema is not None else set()
    return {"rescale", "resize", "return_features"} <= names


def frechet_distance(features: np.ndarray, reference: np.ndarray, ridge: float = RIDGE) -> float:
    """Fréchet distance of Gaussians fitted to (n d) and (m d) feature sets (>= 1 row each).

    Both covariances get `ridge` x their mean variance on the diagonal, so few samples (n <= d)
    still give a finite, symmetric answer. The trace term uses eigen-decompositions of sqrt(A) and
    sqrt(A) B sqrt(A) in float64, in torch (numpy's BLAS threads fight other processes on a
    shared CPU; torch's follow torch.set_num_threads).
    """
    a, b = (torch.tensor(np.asarray(x), dtype=torch.float64) for x in (features, reference))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"frechet distance needs two non-empty (n d) feature sets of equal d, got {tuple(a.shape)} and {tuple(b.shape)}")
    cov_a, cov_b = covariance(a), covariance(b)
    scale = (cov_a.trace() + cov_b.trace()) / (2 * a.shape[1])
    regulariser = ridge * max(float(scale), torch.finfo(torch.float64).tiny) * torch.eye(a.shape[1], dtype=torch.float64)
    cov_a, cov_b = cov_a + regulariser, cov_b + regulariser
    root_a = psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(symmetric(root_a @ cov_b @ root_a)).clamp(min=0).sqrt().sum()
    mean_term = ((a.mean(dim=0) - b.mean(dim=0)) ** 2).sum()
    return max(0.0, float(mean_term + cov_a.trace() + cov_b.trace() - 2 * cross))


def covariance(x: torch.Tensor) -> torch.Tensor:
    """(n d) -> (d d) sample covariance; zeros for a single sample."""
    centred = x - x.mean(dim=0)
    return centred.T @ centred / max(1, len(x) - 1)


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(symmetric(matrix))
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix + matrix.T) / 2
