"""CLIP ViT-L/14 text tower: the text encoder of Stable Diffusion v1.

OpenAI's CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", sec. 2.4; the ViT-L/14 text tower): 49408-token vocabulary, 77 positions, 12 pre-LN
blocks of width 768 with 12 heads, MLP 3072 with quick-GELU, a causal mask, a final LayerNorm.

SD v1 conditions on every token's features, not on CLIP's pooled embedding: the original
FrozenCLIPEmbedder (layer="last") calls HF transformers' CLIPTextModel and returns
`last_hidden_state`, the last block's output after the final LayerNorm. Prompts are padded with the
end-of-text id 49407 (`CLIPTokenizer(pad_with="eot")`).

Checkpoint names: see checkpoints_convert/keymap/clip_text.py (the HF layout, q/k/v stored apart).
"""

from __future__ import annotations

from ldm.config import CLIP_VIT_L_TEXT, TextEncoderConfig

from .text_transformer import TextTransformer


class CLIPTextEncoder(TextTransformer):
    """tokens: LongTensor[B, 77] -> context [B, 77, 768] (SD v1's cross-attention context).

    `encoder(tokens, return_hidden_states=True)` also gives the 13 hidden states [B, 77, 768]
    (embeddings, then after each block); the output is `final_norm(hidden_states[-1])`.
    """

    def __init__(self, config: TextEncoderConfig = CLIP_VIT_L_TEXT):
        if config.kind != "clip":
            raise ValueError(f"CLIPTextEncoder needs a config of kind 'clip', got {config.kind!r}")
        # HF's CLIPTextModel keeps separate q_proj, k_proj, v_proj Linears.
        super().__init__(config, fused_qkv=False)
