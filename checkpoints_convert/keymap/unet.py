"""UNet: original `model.diffusion_model.*` names -> ours (ldm/modules/unet.py).

The original keeps the UNet as flat lists: `input_blocks[n]` (conv_in, then per level the
ResBlock [+ transformer] pairs and a downsample), `middle_block`, `output_blocks[n]` (deepest level
first), `out`. Ours groups the same tensors by level: `down[l]`, `mid`, `up[l]`.
"""

from __future__ import annotations

from ldm.config import UNetConfig

# Tensors inside one ResBlock: original suffix -> ours.
RESBLOCK = {
    "in_layers.0.weight": "norm1.weight", "in_layers.0.bias": "norm1.bias",
    "in_layers.2.weight": "conv1.weight", "in_layers.2.bias": "conv1.bias",
    "emb_layers.1.weight": "time_proj.weight", "emb_layers.1.bias": "time_proj.bias",
    "out_layers.0.weight": "norm2.weight", "out_layers.0.bias": "norm2.bias",
    "out_layers.3.weight": "conv2.weight", "out_layers.3.bias": "conv2.bias",
}
RESBLOCK_SHORTCUT = {"skip_connection.weight": "shortcut.weight", "skip_connection.bias": "shortcut.bias"}

# Tensors inside one SpatialTransformer, outside its blocks.
TRANSFORMER = {
    "norm.weight": "norm.weight", "norm.bias": "norm.bias",
    "proj_in.weight": "proj_in.weight", "proj_in.bias": "proj_in.bias",
    "proj_out.weight": "proj_out.weight", "proj_out.bias": "proj_out.bias",
}
# Tensors inside one BasicTransformerBlock: `transformer_blocks.{d}.` -> `blocks.{d}.`.
TRANSFORMER_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "attn1.to_q.weight": "self_attn.to_q.weight", "attn1.to_k.weight": "self_attn.to_k.weight",
    "attn1.to_v.weight": "self_attn.to_v.weight",
    "attn1.to_out.0.weight": "self_attn.to_out.weight", "attn1.to_out.0.bias": "self_attn.to_out.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attn2.to_q.weight": "cross_attn.to_q.weight", "attn2.to_k.weight": "cross_attn.to_k.weight",
    "attn2.to_v.weight": "cross_attn.to_v.weight",
    "attn2.to_out.0.weight": "cross_attn.to_out.weight", "attn2.to_out.0.bias": "cross_attn.to_out.bias",
    "norm3.weight": "norm3.weight", "norm3.bias": "norm3.bias",
    "ff.net.0.proj.weight": "feed_forward.geglu_proj.weight", "ff.net.0.proj.bias": "feed_forward.geglu_proj.bias",
    "ff.net.2.weight": "feed_forward.out.weight", "ff.net.2.bias": "feed_forward.out.bias",
}
CONV = {"weight": "weight", "bias": "bias"}

# Outside the levels.
TOP_LEVEL = {
    "time_embed.0.weight": "time_embedding.linear_1.weight", "time_embed.0.bias": "time_embedding.linear_1.bias",
    "time_embed.2.weight": "time_embedding.linear_2.weight", "time_embed.2.bias": "time_embedding.linear_2.bias",
    "input_blocks.0.0.weight": "conv_in.weight", "input_blocks.0.0.bias": "conv_in.bias",
    "out.0.weight": "norm_out.weight", "out.0.bias": "norm_out.bias",
    "out.2.weight": "conv_out.weight", "out.2.bias": "conv_out.bias",
}
CLASS_EMBEDDING = {"label_emb.weight": "class_embedding.weight"}


def _prefixed(table: dict[str, str], original: str, ours: str) -> dict[str, str]:
    return {f"{original}.{k}": f"{ours}.{v}" for k, v in table.items()}


def _resblock(original: str, ours: str, has_shortcut: bool) -> dict[str, str]:
    return _prefixed({**RESBLOCK, **(RESBLOCK_SHORTCUT if has_shortcut else {})}, original, ours)


def _transformer(original: str, ours: str, depth: int) -> dict[str, str]:
    table = _prefixed(TRANSFORMER, original, ours)
    for d in range(depth):
        table |= _prefixed(TRANSFORMER_BLOCK, f"{original}.transformer_blocks.{d}", f"{ours}.blocks.{d}")
    return table


def original_to_ours(config: UNetConfig) -> dict[str, str]:
    """Every original UNet key (without `model.diffusion_model.`) -> our UNet's state-dict key."""
    c = config
    table = dict(TOP_LEVEL) | (CLASS_EMBEDDING if c.num_classes is not None else {})
    depth, levels = c.transformer_depth, len(c.channel_mult)

    n, channels = 1, c.model_channels  # input_blocks[0] is conv_in
    skip_channels = [channels]
    for level, mult in enumerate(c.channel_mult):
        attends = 2**level in c.attention_resolutions
        for j in range(c.num_res_blocks):
            out_channels = c.model_channels * mult
            table |= _resblock(f"input_blocks.{n}.0", f"down.{level}.res_blocks.{j}", channels != out_channels)
            channels = out_channels
            if attends:
                table |= _transformer(f"input_blocks.{n}.1", f"down.{level}.attentions.{j}", depth)
            skip_channels.append(channels)
            n += 1
        if level < levels - 1:
            table |= _prefixed(CONV, f"input_blocks.{n}.0.op", f"down.{level}.downsample.conv")
            skip_channels.append(channels)
            n += 1

    table |= _resblock("middle_block.0", "mid.res_block_1", False)
    table |= _transformer("middle_block.1", "mid.attention", depth)
    table |= _resblock("middle_block.2", "mid.res_block_2", False)

    n = 0
    for level, mult in reversed(list(enumerate(c.channel_mult))):
        attends = 2**level in c.attention_resolutions
        for j in range(c.num_res_blocks + 1):
            in_channels, out_channels = channels + skip_channels.pop(), c.model_channels * mult
            table |= _resblock(f"output_blocks.{n}.0", f"up.{level}.res_blocks.{j}", in_channels != out_channels)
            channels = out_channels
            if attends:
                table |= _transformer(f"output_blocks.{n}.1", f"up.{level}.attentions.{j}", depth)
            if level > 0 and j == c.num_res_blocks:
                index = 2 if attends else 1  # the upsample follows the ResBlock (and its transformer)
                table |= _prefixed(CONV, f"output_blocks.{n}.{index}.conv", f"up.{level}.upsample.conv")
            n += 1
    return table
