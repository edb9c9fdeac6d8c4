"""SD v2 text encoder (OpenCLIP ViT-H/14): original checkpoint names -> `OpenCLIPTextEncoder` names.

In an original v2 checkpoint these keys follow the prefix `cond_stage_model.model.`: they are the
state-dict names of open_clip's CLIP model with its visual tower deleted (the original
FrozenOpenCLIPEmbedder does `del model.visual`). Every entry is a pure rename: torch's
nn.MultiheadAttention stores q, k and v as one `in_proj_weight` [3W, W] (rows q, then k, then v)
and `in_proj_bias` [3W], and our attention keeps that fused `in_proj` Linear, so nothing is split.
The causal mask `attn_mask` is a non-persistent buffer in open_clip and so never in a checkpoint.
"""

from __future__ import annotations

from ldm.config import TextEncoderConfig

# In the checkpoint, unused by Stable Diffusion: CLIP's projection into the joint image-text space
# (applied to the pooled end-of-text feature) and the contrastive loss temperature.
IGNORED = frozenset({"text_projection", "logit_scale"})

# Inside one block: (open_clip ResidualAttentionBlock name, ours in ResidualBlock).
BLOCK_RENAMES = (
    ("ln_1.weight", "norm1.weight"),
    ("ln_1.bias", "norm1.bias"),
    ("attn.in_proj_weight", "attention.in_proj.weight"),
    ("attn.in_proj_bias", "attention.in_proj.bias"),
    ("attn.out_proj.weight", "attention.out_proj.weight"),
    ("attn.out_proj.bias", "attention.out_proj.bias"),
    ("ln_2.weight", "norm2.weight"),
    ("ln_2.bias", "norm2.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
)


def original_to_ours(config: TextEncoderConfig) -> dict[str, str]:
    """open_clip names -> OpenCLIPTextEncoder state-dict names. All `config.layers` blocks are
    mapped, the last one too: SD skips it, but the checkpoint carries it."""
    table = {
        "token_embedding.weight": "token_embedding.weight",
        "positional_embedding": "position_embedding",
        "ln_final.weight": "final_norm.weight",
        "ln_final.bias": "final_norm.bias",
    }
    for i in range(config.layers):
        for theirs, ours in BLOCK_RENAMES:
            table[f"transformer.resblocks.{i}.{theirs}"] = f"blocks.{i}.{ours}"
    return table
