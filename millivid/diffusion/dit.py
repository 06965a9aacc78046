"""The diffusion transformer: one model for every schedule, over the tokens of one step.

Input: every gathered token's latent (noisy for DENOISED tokens, clean for CONTEXT tokens) projected
to the width, plus fixed 3-D sin-cos positions over (relative frame, row, column) with rows and
columns in finest-token units, so a coarse token sits at the centre of the fine tokens it covers.
Per-token conditioning (noise level or "clean", level, action) modulates pre-norm blocks
adaLN-Zero style. The modulation is adaLN-single (PixArt-alpha): one projection of the condition
shared by all blocks plus a learned per-block offset, because a per-token condition would make a
projection per block cost as much as the block's MLP. Attention is bidirectional over the step's
tokens with RMS-normalised queries and keys (QK-norm); a mask is used only to hide padding when
examples of a batch have different token counts (see tokens.py for why nothing else is masked).
Output: v-prediction for every token; callers use the DENOISED ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from millivid.diffusion.config import DiTConfig
from millivid.diffusion.tokens import NUM_ACTIONS, StepTokens


def sincos(positions: torch.Tensor, width: int, base: float = 10_000.0) -> torch.Tensor:
    """positions: (... k) -> (... width) sin-cos features, an equal share per axis, zero-padded."""
    axes = positions.shape[-1]
    bands = width // (2 * axes)
    frequencies = base ** -(torch.arange(bands, device=positions.device, dtype=torch.float32) / max(1, bands))
    angles = positions.float()[..., None] * frequencies  # (... k bands)
    features = rearrange(torch.cat([angles.sin(), angles.cos()], dim=-1), "... k f -> ... (k f)")
    return F.pad(features, (0, width - features.shape[-1]))


class QKNorm(nn.Module):
    """RMSNorm computed in fp32 (autocast would otherwise mix a bf16 input with fp32 weights)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight, eps=1e-6).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = QKNorm(width // heads)
        self.k_norm = QKNorm(width // heads)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (b n d); mask: (b 1 1 n) True where a key may be attended, or None."""
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        mixed = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=mask)
        return self.out(rearrange(mixed, "b h n e -> b n (h e)"))


class Block(nn.Module):
    """Pre-norm attention + MLP, each shifted/scaled by the condition and gated (zero at init)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.offset = nn.Parameter(torch.zeros(6, width))
        self.attention_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.attention = Attention(width, heads)
        self.mlp_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (b n d); modulation: (b n 6 d)."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (modulation + self.offset).unbind(dim=-2)
        x = x + gate_a * self.attention(modulate(self.attention_norm(x), shift_a, scale_a), mask)
        return x + gate_m * self.mlp(modulate(self.mlp_norm(x), shift_m, scale_m))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiT(nn.Module):
    """v-prediction for the tokens of a step: forward(tokens, t) -> (b n c).

    `t` (b,) is the diffusion time of each example's DENOISED tokens; CONTEXT tokens are clean and
    get the learned "clean" noise embedding instead. With `kernel_context`, level l > 0 context may
    arrive as FramePack kernel tokens (c * area_l values) through their own projection.
    """

    def __init__(self, config: DiTConfig, channels: int, tokens_per_level: Sequence[int], kernel_context: bool = False):
        super().__init__()
        width = config.width
        self.config, self.channels, self.tokens_per_level = config, channels, tuple(tokens_per_level)
        self.latent_in = nn.Linear(channels, width)
        self.kernel_in = nn.ModuleDict(
            {str(level): nn.Linear(channels * (self.tokens_per_level[0] // n), width) for level, n in enumerate(self.tokens_per_level) if level and kernel_context}
        )
        self.noise_embedding = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.clean_embedding = nn.Parameter(torch.zeros(width))
        self.level_embedding = nn.Embedding(len(self.tokens_per_level), width)
        self.action_embedding = nn.Embedding(NUM_ACTIONS + 1, width)  # + the null action
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.blocks = nn.ModuleList(Block(width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.head_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.head = nn.Linear(width, channels)
        self.checkpoint_blocks = False  # activation checkpointing while training (ComputeConfig)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.clean_embedding, std=0.02)
        for zeroed in (self.modulation[-1], self.head_modulation[-1], self.head):  # adaLN-Zero: blocks start as identity
            nn.init.zeros_(zeroed.weight)
            nn.init.zeros_(zeroed.bias)
        self.init_kernels_from_latent_projection()

    @torch.no_grad()
    def init_kernels_from_latent_projection(self) -> None:
        """FramePack: a larger kernel starts as the base projection repeated over its block and
        scaled by 1/area, i.e. as the projection of the block's mean finest latent."""
        for projection in self.kernel_in.values():
            area = projection.in_features // self.channels
            projection.weight.copy_(repeat(self.latent_in.weight, "d c -> d (area c)", area=area) / area)
            projection.bias.copy_(self.latent_in.bias)

    def forward(self, tokens: StepTokens, t: torch.Tensor) -> torch.Tensor:
        """tokens: a step's tokens (b n); t: (b,) in [0, 1] -> v prediction (b n c)."""
        x = self.embed(tokens)
        condition = self.condition(tokens, t)
        modulation = rearrange(self.modulation(condition), "b n (six d) -> b n six d", six=6)
        mask = rearrange(tokens.valid, "b n -> b 1 1 n") if tokens.padded else None
        for block in self.blocks:
            if self.checkpoint_blocks and self.training:  # recompute in backward instead of keeping activations
                x = checkpoint(block, x, modulation, mask, use_reentrant=False)
            else:
                x = block(x, modulation, mask)
        shift, scale = self.head_modulation(condition).chunk(2, dim=-1)
        return self.head(modulate(self.head_norm(x), shift, scale))

    def embed(self, tokens: StepTokens) -> torch.Tensor:
        """(b n d): projected latents (kernel tokens through their own projection) + positions."""
        x = self.latent_in(tokens.latent)
        for level, values in tokens.kernel.items():
            if str(level) not in self.kernel_in:
                raise ValueError(f"got level-{level} kernel context tokens, but the model was built without kernel_context")
            at_level = rearrange(tokens.kind == level, "b n -> b n 1")
            x = x.masked_scatter(at_level, self.kernel_in[str(level)](values).to(x.dtype))
        positions = torch.stack([tokens.frame, tokens.row, tokens.col], dim=-1)
        return x + sincos(positions, x.shape[-1]).to(x.dtype)

    def condition(self, tokens: StepTokens, t: torch.Tensor) -> torch.Tensor:
        """(b n d): noise level (or clean) + level + action embeddings of every token."""
        noise = self.noise_embedding(sincos(rearrange(t * 1000, "b -> b 1"), self.config.width))
        noise = torch.where(rearrange(tokens.denoised, "b n -> b n 1"), rearrange(noise, "b d -> b 1 d"), self.clean_embedding.to(noise.dtype))
        return noise + self.level_embedding(tokens.level) + self.action_embedding(tokens.action)


def build_dit(config: DiTConfig, channels: int, tokens_per_level: Sequence[int], context_source: str = "hierarchical") -> DiT:
    return DiT(config, channels, tokens_per_level, kernel_context=context_source == "kernel")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

