"""The text transformer that both Stable Diffusion text encoders share.

CLIP's text tower (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", sec. 2.4) is a GPT-2-style transformer: token embedding plus a learned position
embedding, a stack of pre-LayerNorm residual blocks (causal self-attention, then an MLP), and a
final LayerNorm. OpenAI's CLIP ViT-L/14 (SD v1) and OpenCLIP's ViT-H/14 (SD v2) differ only in
size, in the MLP's activation and in how their checkpoints store the attention projections; which
block's output Stable Diffusion reads is a config field (`output_layer`).

`clip_text.py` and `openclip_text.py` hold the two towers; this file holds the pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldm.config import TextEncoderConfig

# Both originals use torch's LayerNorm default (OpenAI CLIP, open_clip, and HF's layer_norm_eps).
LAYER_NORM_EPS = 1e-5


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, sec. 2)
    that OpenAI trained CLIP with, so its weights expect exactly this function, not the exact GELU."""
    return x * torch.sigmoid(1.702 * x)


def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * Phi(x) with the erf form of the normal CDF: open_clip's nn.GELU() (approximate="none")."""
    return F.gelu(x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": exact_gelu}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which token i attends to tokens 0..i only.

    The causal mask is the original's: CLIP's text tower is trained like a language model, and both
    originals pass it an additive mask of -inf above the diagonal (HF `CLIPTextModel` builds it per
    call, open_clip keeps it as the `attn_mask` buffer). `is_causal=True` is that same mask. Padding
    is never masked out: pad tokens sit after the end-of-text token, so the causal mask already
    keeps every real token from seeing them.

    The projections are stored as the checkpoints store them, so that loading is a pure rename:
    `fused_qkv=False` keeps q_proj / k_proj / v_proj (HF CLIPTextModel, SD v1), `fused_qkv=True` keeps
    one `in_proj` whose rows are [q; k; v] (torch's nn.MultiheadAttention in open_clip, SD v2).
    """

    def __init__(self, width: int, heads: int, fused_qkv: bool):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.in_proj = nn.Linear(width, 3 * width)  # weight [3W, W]: q rows, then k, then v
        else:
            self.q_proj = nn.Linear(width, width)
            self.k_proj = nn.Linear(width, width)
            self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: [B, L, W] -> q, k, v: [B, L, W] each
        if self.fused_qkv:
            return self.in_proj(x).chunk(3, dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, L, W] -> [B, L, W]
        batch, length, width = x.shape
        q, k, v = (
            t.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)  # [B, heads, L, head_dim]
            for t in self.project_qkv(x)
        )
        # softmax(q k^T / sqrt(head_dim) + causal mask) v  (Vaswani et al. 2017, eq. 1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, heads, L, head_dim]
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out)


class MLP(nn.Module):
    """W -> mlp_ratio * W -> W with the tower's activation in between."""

    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        self.fc1 = nn.Linear(width, hidden)
        self.activation = ACTIVATIONS[activation]
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, L, W] -> [B, L, W]
        return self.fc2(self.activation(self.fc1(x)))


class ResidualBlock(nn.Module):
    """Pre-LN transformer block (as in GPT-2 and CLIP): x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: TextEncoderConfig, fused_qkv: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.attention = CausalSelfAttention(config.width, config.heads, fused_qkv)
        self.norm2 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(config.width, config.mlp_ratio * config.width, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, L, W] -> [B, L, W]
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def embedding(num_embeddings: int, dim: int) -> nn.Embedding:
    """nn.Embedding with its usual N(0, 1) init, but no init at all when built on the meta device.

    (nn.Embedding's own init on a meta tensor goes through torch's Python reference of normal_,
    whose first use imports torch._dynamo: ~0.9 s of every checkpoint load. Same numbers on the CPU.)
    """
    weight = torch.empty(num_embeddings, dim)
    return nn.Embedding(num_embeddings, dim, _weight=weight if weight.is_meta else nn.init.normal_(weight))


class TextTransformer(nn.Module):
    """Token ids [B, context_length] -> per-token features [B, context_length, width].

    The output is `final_norm` applied to the hidden states after `blocks_for_output` blocks:
    all of them for output_layer="last" (SD v1: HF's `last_hidden_state`, which already carries the
    final LayerNorm), all but the last for "penultimate" (SD v2: the original FrozenOpenCLIPEmbedder
    stops its loop one block early, then applies `ln_final`). The skipped block is still a parameter,
    since checkpoints carry it, but the plain forward never runs it.
    """

    def __init__(self, config: TextEncoderConfig, fused_qkv: bool):
        super().__init__()
        if config.output_layer not in ("last", "penultimate"):
            raise ValueError(f"output_layer {config.output_layer!r} is not 'last' or 'penultimate'")
        self.config = config
        self.token_embedding = embedding(config.vocab_size, config.width)
        # Learned absolute positions, one row per token slot.
        self.position_embedding = nn.Parameter(torch.zeros(config.context_length, config.width))
        self.blocks = nn.ModuleList(ResidualBlock(config, fused_qkv) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.blocks_for_output = config.layers - (1 if config.output_layer == "penultimate" else 0)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Reject anything but integer ids of shape [B, context_length] inside the vocabulary."""
        length, vocab = self.config.context_length, self.config.vocab_size
        expected = f"an integer tensor (torch.long or torch.int32) of shape [B, {length}]"
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be {expected}, got {type(tokens).__name__}")
        if tokens.dtype not in (torch.long, torch.int32) or tokens.dim() != 2 or tokens.shape[1] != length:
            raise ValueError(
                f"tokens must be {expected} (the tokenizer's output), got shape "
                f"{list(tokens.shape)} with dtype {tokens.dtype}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
            raise ValueError(
                f"token ids must lie in 0..{vocab - 1}, got ids from {tokens.min().item()} "
                f"to {tokens.max().item()}"
            )

    def forward(
        self, tokens: torch.Tensor, return_hidden_states: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens: [B, L] -> [B, L, W]; with return_hidden_states also the list of layers + 1
        hidden states [B, L, W] (index 0: the embeddings, index i: after block i, before any final
        LayerNorm), the convention of HF's `output_hidden_states`. Only then is a skipped last
        block run, so that every layer can be inspected."""
        self.check_tokens(tokens)
        x = self.token_embedding(tokens) + self.position_embedding  # [B, L, W]
        hidden_states = [x]
        blocks = self.blocks if return_hidden_states else self.blocks[: self.blocks_for_output]
        for block in blocks:
            x = block(x)
            hidden_states.append(x)
        output = self.final_norm(hidden_states[self.blocks_for_output])  # [B, L, W]
        if return_hidden_states:
            return output, hidden_states
        return output
