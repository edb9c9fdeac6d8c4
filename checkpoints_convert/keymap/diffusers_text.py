"""Text encoder: our names <-> transformers' `CLIPTextModel` (the `text_encoder/` folder of a pipeline).

diffusers keeps both Stable Diffusion text encoders as transformers' CLIPTextModel:
- v1 (CLIP ViT-L/14) IS that model in the original checkpoints, so the map is the v1 checkpoint
  table itself (`clip_text.py`): same names, same tensors.
- v2 (OpenCLIP ViT-H/14) becomes a CLIPTextModel with `hidden_act` "gelu" (open_clip's exact GELU)
  and 23 layers, not 24. SD v2 reads the penultimate block's output through the final LayerNorm,
  and a 23-layer CLIPTextModel's `last_hidden_state` is exactly that, so diffusers' own converter
  (`diffusers.loaders.single_file_utils.convert_open_clip_checkpoint`) drops block 23 (with the
  unused `text_projection`); we do the same. Each fused `in_proj` [3W, W] (rows q, k, v) is split
  into q_proj, k_proj, v_proj.

Reading a v2 folder back, block 23 is not there: it is filled with zeros (`not_stored`). The
plain forward never runs it, and a pre-LN residual block with all-zero weights is the identity
(LN(x) * 0 + 0 feeds projections of 0 that add 0 to x), so even `return_hidden_states=True` stays
meaningful: its last state equals the one before it. Everything else round-trips bit for bit.

diffusers folders name the tensors `text_model.*` (transformers 4's layout, which transformers 5
still reads); files written without that level (transformers 5's save_pretrained) are read too.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ldm.config import TextEncoderConfig

from .clip_text import BLOCK_RENAMES, TEXT_MODEL
from .diffusers_component import ComponentMap

TOP_LEVEL = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "position_embedding": "text_model.embeddings.position_embedding.weight",  # [77, W] both sides
    "final_norm.weight": "text_model.final_layer_norm.weight",
    "final_norm.bias": "text_model.final_layer_norm.bias",
}
# transformers 4 saved its arange(77) position-index buffer; it holds no weight.
IGNORED = frozenset({"text_model.embeddings.position_ids"})
# v2: our fused projection -> transformers' three (rows in this order).
FUSED_QKV = {"attention.in_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")}
# The separate q, k, v of BLOCK_RENAMES (v1); for v2 they come from FUSED_QKV instead.
SEPARATE_QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


def stored_layers(config: TextEncoderConfig) -> int:
    """Blocks the diffusers text encoder keeps: all but the last when SD reads the penultimate one."""
    return config.layers - 1 if config.output_layer == "penultimate" else config.layers


def ours_to_diffusers(config: TextEncoderConfig) -> ComponentMap:
    """Every key of our text encoder -> the same tensor's key in transformers' CLIPTextModel."""
    renames, split, not_stored = dict(TOP_LEVEL), {}, set()
    for i in range(config.layers):
        theirs = f"text_model.encoder.layers.{i}"
        for hf_name, ours in BLOCK_RENAMES:
            if config.kind == "openclip" and ours in SEPARATE_QKV:
                continue
            for param in ("weight", "bias"):
                renames[f"blocks.{i}.{ours}.{param}"] = f"{theirs}.{hf_name}.{param}"
        if config.kind == "openclip":
            for ours, parts in FUSED_QKV.items():
                for param in ("weight", "bias"):
                    split[f"blocks.{i}.{ours}.{param}"] = tuple(f"{theirs}.{p}.{param}" for p in parts)
        if i >= stored_layers(config):
            not_stored |= {k for k in renames | split if k.startswith(f"blocks.{i}.")}
    renames = {k: v for k, v in renames.items() if k not in not_stored}
    split = {k: v for k, v in split.items() if k not in not_stored}
    return ComponentMap(renames, split=split, not_stored=frozenset(not_stored), ignored=IGNORED)


def with_text_model_level(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names as diffusers' folders have them: `text_model.` added where a file lacks the level."""
    if any(key.startswith(TEXT_MODEL) for key in tensors):
        return dict(tensors)
    return {TEXT_MODEL + key: value for key, value in tensors.items()}


def text_encoder_config(config: TextEncoderConfig, pad_id: int, dtype: torch.dtype) -> dict:
    """The `text_encoder/config.json` of transformers' CLIPTextModel."""
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.context_length,
        "hidden_size": config.width,
        "intermediate_size": config.mlp_ratio * config.width,
        "num_hidden_layers": stored_layers(config),
        "num_attention_heads": config.heads,
        "hidden_act": config.activation,  # "quick_gelu" (v1) / "gelu" (v2): the same functions in transformers
        "layer_norm_eps": 1e-5,
        "projection_dim": config.width,  # unused by CLIPTextModel
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": pad_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


# Reading a folder: the fields checked against `text_encoder_config`, with transformers' defaults.
CHECKED_DEFAULTS = {
    "vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 512, "intermediate_size": 2048,
    "num_hidden_layers": 12, "num_attention_heads": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}


def normalised(folder_config: dict) -> dict:
    return {k: folder_config.get(k, default) for k, default in CHECKED_DEFAULTS.items()}
