"""SD v1 text encoder (CLIP ViT-L/14): original checkpoint names -> `CLIPTextEncoder` names.

In an original v1 checkpoint these keys follow the prefix `cond_stage_model.transformer.`: they are
the state-dict names of HF transformers' `CLIPTextModel`, which the original FrozenCLIPEmbedder wraps.
Every entry is a pure rename (same tensor, same shape).

Two namings exist in the wild:
- `text_model.embeddings...`, `text_model.encoder.layers.N...`, `text_model.final_layer_norm...`
  (HF's layout since CLIPTextModel wrapped a `text_model`; SD v1.4 / v1.5 files): `original_to_ours`.
- the same names without the `text_model.` level (older v1 files; AUTOMATIC1111 inserts the level
  when it loads them; transformers 5's own CLIPTextModel names are also these, as it dropped
  the level): `original_to_ours_without_text_model`. `select_table` picks by the keys.

Keys that exist in checkpoints but hold no weight are listed, not mapped: `IGNORED` (and
`IGNORED_WITHOUT_TEXT_MODEL`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ldm.config import TextEncoderConfig

TEXT_MODEL = "text_model."

# HF's buffer arange(77) of position indices (transformers 4.x saved it); ours adds the position
# embedding rows in order, so nothing reads it.
IGNORED = frozenset({"text_model.embeddings.position_ids"})
IGNORED_WITHOUT_TEXT_MODEL = frozenset(key.removeprefix(TEXT_MODEL) for key in IGNORED)

# Inside one block, each with .weight and .bias: (HF CLIPEncoderLayer name, ours in ResidualBlock).
BLOCK_RENAMES = (
    ("layer_norm1", "norm1"),
    ("self_attn.q_proj", "attention.q_proj"),
    ("self_attn.k_proj", "attention.k_proj"),
    ("self_attn.v_proj", "attention.v_proj"),
    ("self_attn.out_proj", "attention.out_proj"),
    ("layer_norm2", "norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
)


def original_to_ours(config: TextEncoderConfig) -> dict[str, str]:
    """HF CLIPTextModel names (with `text_model.`) -> CLIPTextEncoder state-dict names."""
    table = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        # an nn.Embedding [77, W] in HF, a plain parameter [77, W] here
        "text_model.embeddings.position_embedding.weight": "position_embedding",
        "text_model.final_layer_norm.weight": "final_norm.weight",
        "text_model.final_layer_norm.bias": "final_norm.bias",
    }
    for i in range(config.layers):
        for theirs, ours in BLOCK_RENAMES:
            for param in ("weight", "bias"):
                table[f"text_model.encoder.layers.{i}.{theirs}.{param}"] = f"blocks.{i}.{ours}.{param}"
    return table


def original_to_ours_without_text_model(config: TextEncoderConfig) -> dict[str, str]:
    """The same table for older v1 files whose names lack the `text_model.` level."""
    return {key.removeprefix(TEXT_MODEL): ours for key, ours in original_to_ours(config).items()}


def select_table(config: TextEncoderConfig, keys: Iterable[str]) -> tuple[dict[str, str], frozenset[str]]:
    """(table, ignored keys) for a checkpoint's text-encoder keys (prefix already removed):
    the `text_model.` naming if any key carries that level, else the older naming."""
    if any(key.startswith(TEXT_MODEL) for key in keys):
        return original_to_ours(config), IGNORED
    return original_to_ours_without_text_model(config), IGNORED_WITHOUT_TEXT_MODEL
