"""Attention in the UNet: CrossAttention, the GEGLU FeedForward, and the SpatialTransformer.

Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V  (Vaswani et al. 2017, eq. 1). In the UNet the
queries come from the image features and, for cross-attention, the keys and values from the text
encoder's output (LDM, Rombach et al. 2022, eq. 3-4).

Three interchangeable ways to compute the same attention, chosen per module with `.mode`:
- "sdpa": torch's fused scaled_dot_product_attention (the default: fastest, least memory);
- "math": the formula written out, softmax in float32 as the original forces it; it can hand the
  attention probabilities to `on_attention_probs(module, probs)` (teaching, cross-attention maps);
- "sliced": the math path over chunks of `slice_size` queries, for small memory.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_MODES = ("sdpa", "math", "sliced")


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v, returning (output, probabilities).

    q: [B, heads, Nq, d], k, v: [B, heads, Nk, d] -> ([B, heads, Nq, d], [B, heads, Nq, Nk])
    The original computes the scores and the softmax in float32 even under fp16 autocast
    (its `_ATTN_PRECISION = "fp32"`), to avoid overflow; so do we.
    """
    scale = q.shape[-1] ** -0.5
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    probs = scores.softmax(dim=-1)
    return (probs.to(v.dtype) @ v), probs


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str = "sdpa", slice_size: int = 1024
              ) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in one of ATTENTION_MODES (module docstring); shapes as attention_math."""
    if mode == "math":
        return attention_math(q, k, v)[0]
    if mode == "sliced":  # the same formula over chunks of queries: a [slice_size, Nk] score matrix at a time
        return torch.cat([attention_math(q[:, :, i:i + slice_size], k, v)[0] for i in range(0, q.shape[2], slice_size)],
                         dim=2)
    return F.scaled_dot_product_attention(q, k, v)


class CrossAttention(nn.Module):
    """Multi-head attention of x over `context` (self-attention when context is None).

    x: [B, N, query_dim], context: [B, M, context_dim] -> [B, N, query_dim]
    """

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, head_dim: int):
        super().__init__()
        inner_dim = heads * head_dim
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, query_dim)
        self.mode = "sdpa"
        self.slice_size = 1024
        self.on_attention_probs: Callable[[CrossAttention, torch.Tensor], None] | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self._split_heads(self.to_q(x)), self._split_heads(self.to_k(context)), self._split_heads(self.to_v(context))
        if self.on_attention_probs is not None:
            out, probs = attention_math(q, k, v)
            self.on_attention_probs(self, probs)
        else:
            out = attention(q, k, v, self.mode, self.slice_size)
        batch, heads, tokens, head_dim = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        # [B, N, heads * d] -> [B, heads, N, d]
        batch, tokens, _ = t.shape
        return t.view(batch, tokens, self.heads, -1).transpose(1, 2)


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer 2020): W_out (a * GELU(g)), where [a, g] = W_in x.

    x: [B, N, dim] -> [B, N, dim]; the inner width is 4 * dim. Each token is its own input, so
    `chunk_size` tokens at a time compute the same (memory.enable_forward_chunking): the [B, N,
    8 * dim] projection is the UNet's largest activation (168 MB for v1's 64x64 latents, batch 2).
    """

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner_dim = dim * mult
        self.geglu_proj = nn.Linear(dim, 2 * inner_dim)
        self.out = nn.Linear(inner_dim, dim)
        self.chunk_size: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunk_size is not None and x.shape[1] > self.chunk_size:
            return torch.cat([self(x[:, i:i + self.chunk_size]) for i in range(0, x.shape[1], self.chunk_size)], dim=1)
        value, gate = self.geglu_proj(x).chunk(2, dim=-1)
        return self.out(value * F.gelu(gate))


class BasicTransformerBlock(nn.Module):
    """Pre-LN transformer block: self-attention, cross-attention to the text, GEGLU feed-forward.

    With `self_attends_to_context` (the x4 upscaler's "disable_self_attn"), the first attention
    also attends to the context instead of to the image tokens; it is not removed.
    x: [B, N, dim], context: [B, M, context_dim] -> [B, N, dim]
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, self_attends_to_context: bool = False):
        super().__init__()
        self.self_attends_to_context = self_attends_to_context
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, context_dim if self_attends_to_context else None, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, context_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), context if self.self_attends_to_context else None)
        x = x + self.cross_attn(self.norm2(x), context)
        return x + self.feed_forward(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer over the H*W positions of a feature map, conditioned on the text context.

    GroupNorm, project in (1x1 conv in v1, Linear in v2), transformer blocks, project out, and a
    residual connection around it all.
    x: [B, C, H, W], context: [B, M, context_dim] -> [B, C, H, W]
    """

    def __init__(self, channels: int, heads: int, head_dim: int, context_dim: int, depth: int = 1,
                 use_linear: bool = False, self_attends_to_context: bool = False, norm_groups: int = 32):
        super().__init__()
        inner_dim = heads * head_dim
        self.use_linear = use_linear
        # The original uses eps=1e-6 here (its `Normalize`), unlike the ResBlocks' 1e-5.
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        if use_linear:
            self.proj_in, self.proj_out = nn.Linear(channels, inner_dim), nn.Linear(inner_dim, channels)
        else:
            self.proj_in, self.proj_out = nn.Conv2d(channels, inner_dim, 1), nn.Conv2d(inner_dim, channels, 1)
        self.blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, heads, head_dim, context_dim, self_attends_to_context) for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2).contiguous()  # [B, C, H, W] -> [B, H*W, C]
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.blocks:
            h = block(h, context)
        if self.use_linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(batch, -1, height, width).contiguous()  # back to [B, C, H, W]
        if not self.use_linear:
            h = self.proj_out(h)
        return x + h


def set_attention_mode(model: nn.Module, mode: str, slice_size: int | None = None) -> None:
    """Switch every attention inside `model` to "sdpa", "math" or "sliced": the UNet's CrossAttention
    and the VAE's AttentionBlock (every module with a `mode` and a `slice_size`)."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r} is not one of {ATTENTION_MODES}")
    for module in model.modules():
        if hasattr(module, "mode") and hasattr(module, "slice_size"):
            module.mode = mode
            if slice_size is not None:
                module.slice_size = slice_size
