"""OpenCLIP ViT-H/14 text tower: the text encoder of Stable Diffusion v2.

The CLIP architecture (Radford et al. 2021, sec. 2.4) as open_clip implements and LAION trained it
(Cherti et al. 2023, "Reproducible scaling laws for contrastive language-image learning";
weights laion2b_s32b_b79k): 49408-token vocabulary, 77 positions, 24 pre-LN blocks of width 1024
with 16 heads, MLP 4096 with the exact (erf) GELU, a causal mask, a final LayerNorm (`ln_final`).

SD v2 reads the PENULTIMATE block: the original FrozenOpenCLIPEmbedder(layer="penultimate") runs
token_embedding + positional_embedding, then resblocks 0..22 (its loop breaks before the last
one), then ln_final. Block 23 stays a parameter here because checkpoints carry it, and
`return_hidden_states=True` runs it for inspection, but the plain forward never does. Prompts are
padded with 0 (`CLIPTokenizer(pad_with="zero")`). The CLIP `text_projection` and `logit_scale`
only serve the contrastive loss, so they are not part of this module.

Checkpoint names: see checkpoints_convert/keymap/openclip_text.py (nn.MultiheadAttention's fused
in_proj is kept fused here, so the map is a pure rename).
"""

from __future__ import annotations

from ldm.config import OPENCLIP_VIT_H_TEXT, TextEncoderConfig

from .text_transformer import TextTransformer


class OpenCLIPTextEncoder(TextTransformer):
    """tokens: LongTensor[B, 77] -> context [B, 77, 1024] (SD v2's cross-attention context).

    `encoder(tokens, return_hidden_states=True)` also gives the 25 hidden states [B, 77, 1024]
    (embeddings, then after each block); the output is `final_norm(hidden_states[-2])`.
    """

    def __init__(self, config: TextEncoderConfig = OPENCLIP_VIT_H_TEXT):
        if config.kind != "openclip":
            raise ValueError(f"OpenCLIPTextEncoder needs a config of kind 'openclip', got {config.kind!r}")
        # open_clip's blocks use torch's nn.MultiheadAttention: one in_proj of shape [3W, W].
        super().__init__(config, fused_qkv=True)
