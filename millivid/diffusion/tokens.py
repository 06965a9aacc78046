"""The tokens of one schedule step, gathered from per-level latent buffers with per-token conditioning.

A step matrix (levels, span) marks cells CONTEXT or DENOISED; each such cell (level l, column j)
contributes the n_l tokens of frame frames[j] at level l. UNSEEN cells contribute nothing, so no
token of a step can attend to them: the step's attention needs no mask (every gathered token is
either clean context or being denoised together, and all of them may see each other).

Actions: `actions[:, f]` is the action that moved the camera from frame f-1 to frame f, i.e. the
action that produced frame f (0 forward, 1 left, 2 right); every token of frame f carries it.
NULL_ACTION stands for "no action given" (classifier-free guidance).

FramePack's "kernel" context source: a CONTEXT cell at level l > 0 is not the level-l latent but
the frame's finest latents cut into 2^l x 2^l blocks, one token of c * 4^l values per block (same
token count as level l); `kind` l marks those tokens, kind 0 a latent token of its level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from millivid.diffusion.schedule import CONTEXT, DENOISED, UNSEEN

NUM_ACTIONS = 3
NULL_ACTION = NUM_ACTIONS
LATENT_KIND = 0


@dataclass(frozen=True)
class Segment:
    """Cells of one level (and one token kind) of a step, in column order."""

    level: int
    kernel: bool
    columns: np.ndarray  # (cells,)
    denoised: np.ndarray  # (cells,) bool


@dataclass(frozen=True)
class TokenLayout:
    """Where every token of a step comes from; per-token arrays are (n,), segments in token order."""

    segments: tuple[Segment, ...]
    level: np.ndarray
    column: np.ndarray  # the step's column: the token's relative frame index
    row: np.ndarray  # token centre in finest-token units: levels share one coordinate frame
    col: np.ndarray
    kind: np.ndarray
    denoised: np.ndarray
    grids: tuple[int, ...]  # tokens per side of each level

    @property
    def tokens(self) -> int:
        return len(self.level)

    @property
    def denoised_segment(self) -> Segment:
        (segment,) = [s for s in self.segments if s.denoised.any()]
        return segment


def level_grids(tokens_per_level: Sequence[int]) -> tuple[int, ...]:
    grids = tuple(math.isqrt(n) for n in tokens_per_level)
    if any(g * g != n for g, n in zip(grids, tokens_per_level, strict=True)):
        raise ValueError(f"tokens_per_level must be square grids, got {tuple(tokens_per_level)}")
    if any(grids[0] % g for g in grids):
        raise ValueError(f"coarser grids must divide the finest grid, got sides {grids}")
    return grids


def step_layout(matrix: np.ndarray, tokens_per_level: Sequence[int], context_source: str = "hierarchical") -> TokenLayout:
    """The token layout of a step matrix (levels, span); kernel context applies at levels > 0."""
    matrix = np.asarray(matrix)
    grids = level_grids(tokens_per_level)
    if matrix.ndim != 2 or matrix.shape[0] != len(grids):
        raise ValueError(f"step matrix must be (levels={len(grids)}, span), got shape {matrix.shape}")
    segments = []
    for level in range(len(grids)):
        states = matrix[level]
        in_step = np.flatnonzero(states != UNSEEN)
        kernel = (context_source == "kernel") & (level > 0) & (states[in_step] == CONTEXT)
        for is_kernel in (False, True):
            columns = in_step[kernel == is_kernel]
            if len(columns):
                segments.append(Segment(level, is_kernel, columns, states[columns] == DENOISED))
    parts = [segment_tokens(segment, grids) for segment in segments]
    fields = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return TokenLayout(segments=tuple(segments), grids=grids, **fields)


def segment_tokens(segment: Segment, grids: tuple[int, ...]) -> dict[str, np.ndarray]:
    side = grids[segment.level]
    scale = grids[0] // side
    centres = (np.arange(side) + 0.5) * scale
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    cells = len(segment.columns)
    return {
        "level": np.full(cells * side * side, segment.level),
        "column": repeat(segment.columns, "f -> (f n)", n=side * side),
        "row": repeat(rows.ravel(), "n -> (f n)", f=cells),
        "col": repeat(cols.ravel(), "n -> (f n)", f=cells),
        "kind": np.full(cells * side * side, segment.level if segment.kernel else LATENT_KIND),
        "denoised": repeat(segment.denoised, "f -> (f n)", n=side * side),
    }


@dataclass(frozen=True)
class StepTokens:
    """Tokens of one step for a batch. Per-token fields are (b n); `latent` is (b n c).

    `latent` holds each token's latent (noisy for DENOISED tokens once noised, zeros for kernel
    tokens); `kernel[l]` packs the kernel-2^l tokens' values (m c*4^l) in row-major (b n) order.
    `valid` is False on padding (examples of a batch whose steps have fewer tokens); `padded` says
    whether there is any, known on the host when the batch is built (reading `valid` would make a
    GPU wait for every forward).
    """

    latent: torch.Tensor
    kernel: dict[int, torch.Tensor]
    kind: torch.Tensor
    level: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    action: torch.Tensor
    denoised: torch.Tensor
    valid: torch.Tensor
    padded: bool = False

    def replace(self, **changes) -> StepTokens:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> StepTokens:
        moved = {name: getattr(self, name).to(device) for name in TENSOR_FIELDS}
        return StepTokens(kernel={level: v.to(device) for level, v in self.kernel.items()}, padded=self.padded, **moved)


def gather(latents: Sequence[torch.Tensor], actions: torch.Tensor, frames: np.ndarray, layout: TokenLayout) -> StepTokens:
    """Tokens of a step for a batch sharing one layout.

    latents[l]: (b T n_l c) per-level buffers; actions: (b T) ints; frames: (span,) the buffer frame
    of every step column (columns outside the step are ignored and may be negative).
    """
    batch, length = actions.shape
    frames = np.asarray(frames)
    values, kernel = [], {}
    for segment in layout.segments:
        index = torch.as_tensor(frames[segment.columns])
        if index.min() < 0 or index.max() >= length:
            raise ValueError(f"step columns {segment.columns.tolist()} map to frames {index.tolist()} outside 0..{length - 1}")
        if segment.kernel:
            packed = kernel_tokens(latents[0][:, index], layout.grids[segment.level])
            kernel[segment.level] = rearrange(packed, "b m d -> (b m) d")
            values.append(packed.new_zeros(batch, packed.shape[1], latents[0].shape[-1]))
        else:
            values.append(rearrange(latents[segment.level][:, index], "b f n c -> b (f n) c").float())
    device = actions.device

    def per_token(name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        return repeat(torch.as_tensor(getattr(layout, name), dtype=dtype, device=device), "n -> b n", b=batch)

    return StepTokens(
        latent=torch.cat(values, dim=1),
        kernel=kernel,
        kind=per_token("kind"),
        level=per_token("level"),
        frame=per_token("column", torch.float32),
        row=per_token("row", torch.float32),
        col=per_token("col", torch.float32),
        action=actions[:, torch.as_tensor(frames[layout.column], device=device)].long(),
        denoised=per_token("denoised"),
        valid=torch.ones(batch, layout.tokens, dtype=torch.bool, device=device),
    )


def kernel_tokens(finest: torch.Tensor, side: int) -> torch.Tensor:
    """finest: (b f n0 c) -> (b (f side side) (k k c)): the finest grid cut into k x k blocks, k = g0/side."""
    grid = math.isqrt(finest.shape[2])
    k = grid // side
    return rearrange(finest, "b f (gh kh gw kw) c -> b (f gh gw) (kh kw c)", gh=side, kh=k, gw=side, kw=k).float()


TENSOR_FIELDS = tuple(f.name for f in dataclasses.fields(StepTokens) if f.name not in ("kernel", "padded"))


def concat(parts: Sequence[StepTokens]) -> StepTokens:
    """Stack batches along b, padding shorter token sequences (valid=False) to the longest."""
    lengths = [part.valid.shape[1] for part in parts]
    longest = max(lengths)
    stacked = {name: torch.cat([pad_tokens(getattr(part, name), longest) for part in parts]) for name in TENSOR_FIELDS}
    levels = sorted({level for part in parts for level in part.kernel})
    kernel = {level: torch.cat([part.kernel[level] for part in parts if level in part.kernel]) for level in levels}
    padded = any(part.padded for part in parts) or min(lengths) < longest
    return StepTokens(kernel=kernel, padded=padded, **stacked)


def pad_tokens(field: torch.Tensor, length: int) -> torch.Tensor:
    """Pad dim 1 of (b n ...) with zeros (False for bool fields) up to `length`."""
    missing = length - field.shape[1]
    if missing == 0:
        return field
    return F.pad(field, (0, 0) * (field.ndim - 2) + (0, missing))
