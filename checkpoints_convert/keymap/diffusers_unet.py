"""UNet: our names <-> diffusers' `UNet2DConditionModel` (the `unet/` folder of a pipeline).

Both group the UNet by level, so the map is a rename: our `down[l]` is `down_blocks.l`, `mid` is
`mid_block`, and our `up[l]` (numbered by level, as the down path) is `up_blocks.{L-1-l}` (diffusers
numbers the up path in the order it runs, deepest first). No tensor changes shape.

`unet_config(config)` is the `unet/config.json` diffusers needs to build the same network; every
field that changes the keys or the numbers is written out, with diffusers' name for it.
"""

from __future__ import annotations

from ldm.config import UNetConfig

from .diffusers_component import ComponentMap

PARAMS = ("weight", "bias")

# Inside one ResBlock (diffusers' ResnetBlock2D): ours -> diffusers, each with weight and bias.
RESBLOCK = {"norm1": "norm1", "conv1": "conv1", "time_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2"}
RESBLOCK_SHORTCUT = {"shortcut": "conv_shortcut"}  # only where the block changes width

# Inside one SpatialTransformer (diffusers' Transformer2DModel), outside its blocks.
TRANSFORMER = {"norm": "norm", "proj_in": "proj_in", "proj_out": "proj_out"}
# Inside one transformer block: `blocks.{d}.` -> `transformer_blocks.{d}.`; full tensor names.
TRANSFORMER_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "self_attn.to_q.weight": "attn1.to_q.weight", "self_attn.to_k.weight": "attn1.to_k.weight",
    "self_attn.to_v.weight": "attn1.to_v.weight",
    "self_attn.to_out.weight": "attn1.to_out.0.weight", "self_attn.to_out.bias": "attn1.to_out.0.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "cross_attn.to_q.weight": "attn2.to_q.weight", "cross_attn.to_k.weight": "attn2.to_k.weight",
    "cross_attn.to_v.weight": "attn2.to_v.weight",
    "cross_attn.to_out.weight": "attn2.to_out.0.weight", "cross_attn.to_out.bias": "attn2.to_out.0.bias",
    "norm3.weight": "norm3.weight", "norm3.bias": "norm3.bias",
    "feed_forward.geglu_proj.weight": "ff.net.0.proj.weight", "feed_forward.geglu_proj.bias": "ff.net.0.proj.bias",
    "feed_forward.out.weight": "ff.net.2.weight", "feed_forward.out.bias": "ff.net.2.bias",
}
# Outside the levels: ours -> diffusers, each with weight and bias.
TOP_LEVEL = {
    "time_embedding.linear_1": "time_embedding.linear_1", "time_embedding.linear_2": "time_embedding.linear_2",
    "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out",
}
CLASS_EMBEDDING = {"class_embedding.weight": "class_embedding.weight"}  # x4 upscaler (noise level)


def _params(table: dict[str, str], ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.{o}.{p}": f"{theirs}.{t}.{p}" for o, t in table.items() for p in PARAMS}


def _resblock(ours: str, theirs: str, has_shortcut: bool) -> dict[str, str]:
    return _params({**RESBLOCK, **(RESBLOCK_SHORTCUT if has_shortcut else {})}, ours, theirs)


def _transformer(ours: str, theirs: str, depth: int) -> dict[str, str]:
    table = _params(TRANSFORMER, ours, theirs)
    for d in range(depth):
        table |= {f"{ours}.blocks.{d}.{o}": f"{theirs}.transformer_blocks.{d}.{t}"
                  for o, t in TRANSFORMER_BLOCK.items()}
    return table


def ours_to_diffusers(config: UNetConfig) -> ComponentMap:
    """Every key of our UNet -> the same tensor's key in diffusers' UNet2DConditionModel."""
    c = config
    table = {f"{o}.{p}": f"{t}.{p}" for o, t in TOP_LEVEL.items() for p in PARAMS}
    table |= CLASS_EMBEDDING if c.num_classes is not None else {}
    depth, levels = c.transformer_depth, len(c.channel_mult)

    channels = c.model_channels
    skip_channels = [channels]  # what each down-path output hands to the up path
    for level, mult in enumerate(c.channel_mult):
        attends = 2**level in c.attention_resolutions
        for j in range(c.num_res_blocks):
            out_channels = c.model_channels * mult
            table |= _resblock(f"down.{level}.res_blocks.{j}", f"down_blocks.{level}.resnets.{j}",
                               channels != out_channels)
            channels = out_channels
            if attends:
                table |= _transformer(f"down.{level}.attentions.{j}", f"down_blocks.{level}.attentions.{j}", depth)
            skip_channels.append(channels)
        if level < levels - 1:
            table |= _params({"conv": "conv"}, f"down.{level}.downsample", f"down_blocks.{level}.downsamplers.0")
            skip_channels.append(channels)

    table |= _resblock("mid.res_block_1", "mid_block.resnets.0", False)
    table |= _transformer("mid.attention", "mid_block.attentions.0", depth)
    table |= _resblock("mid.res_block_2", "mid_block.resnets.1", False)

    for level, mult in reversed(list(enumerate(c.channel_mult))):
        theirs = f"up_blocks.{levels - 1 - level}"
        attends = 2**level in c.attention_resolutions
        for j in range(c.num_res_blocks + 1):
            in_channels, out_channels = channels + skip_channels.pop(), c.model_channels * mult
            table |= _resblock(f"up.{level}.res_blocks.{j}", f"{theirs}.resnets.{j}", in_channels != out_channels)
            channels = out_channels
            if attends:
                table |= _transformer(f"up.{level}.attentions.{j}", f"{theirs}.attentions.{j}", depth)
        if level > 0:
            table |= _params({"conv": "conv"}, f"up.{level}.upsample", f"{theirs}.upsamplers.0")
    return ComponentMap(table)


def unet_config(config: UNetConfig, sample_size: int) -> dict:
    """The `unet/config.json` of diffusers' UNet2DConditionModel for this UNet.

    diffusers' `attention_head_dim` holds the number of HEADS (a naming slip it keeps for
    compatibility): v1's 8 heads everywhere is `8`; v2's 64 channels per head is the per-level head
    count [5, 10, 20, 20]. The fixed fields are the original's numerics: sin/cos timestep features
    with cos first (flip_sin_to_cos, no shift), GroupNorm eps 1e-5, SiLU, the downsampling conv's
    padding 1.
    """
    c = config
    widths = [c.model_channels * m for m in c.channel_mult]
    attends = [2**level in c.attention_resolutions for level in range(len(widths))]
    if c.num_head_channels is not None:
        heads: int | list[int] = [w // c.num_head_channels for w in widths]
    else:
        heads = c.num_heads
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size,
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "block_out_channels": widths,
        "layers_per_block": c.num_res_blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "cross_attention_dim": c.context_dim,
        "attention_head_dim": heads,
        "transformer_layers_per_block": c.transformer_depth,
        "use_linear_projection": c.use_linear_in_transformer,
        "only_cross_attention": list(c.disable_self_attentions) if c.disable_self_attentions else False,
        "num_class_embeds": c.num_classes,
        "norm_num_groups": c.norm_groups,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "center_input_sample": False,
        "mid_block_scale_factor": 1,
        "resnet_time_scale_shift": "default",
        "time_embedding_type": "positional",
        "class_embed_type": None,
        "addition_embed_type": None,
        "encoder_hid_dim": None,
        "time_cond_proj_dim": None,
        "dual_cross_attention": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "attention_type": "default",
        # q.k and the softmax in float32 under float16 weights, as the original v2 code
        # (_ATTN_PRECISION="fp32") and our "math"/"sliced" attention modes; diffusers' own
        # stable-diffusion-2-1 folder sets it too. Only diffusers' non-SDPA processors read it; no
        # weight depends on it, so reading a folder does not check it.
        "upcast_attention": True,
    }


# Reading a folder: the fields checked against `unet_config` of the variant, and the value
# diffusers assumes when config.json leaves one out (hub configs written by old versions do).
CHECKED_DEFAULTS = {
    "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 1280, "attention_head_dim": 8, "transformer_layers_per_block": 1,
    "use_linear_projection": False, "only_cross_attention": False, "num_class_embeds": None,
    "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu", "flip_sin_to_cos": True, "freq_shift": 0,
    "downsample_padding": 1, "center_input_sample": False, "mid_block_scale_factor": 1,
    "resnet_time_scale_shift": "default", "time_embedding_type": "positional", "class_embed_type": None,
    "addition_embed_type": None, "encoder_hid_dim": None, "time_cond_proj_dim": None,
    "dual_cross_attention": False, "conv_in_kernel": 3, "conv_out_kernel": 3, "attention_type": "default",
}
# Fields diffusers accepts either as one value or as one value per level.
PER_LEVEL = ("attention_head_dim", "transformer_layers_per_block", "only_cross_attention")


def normalised(folder_config: dict) -> dict:
    """The checked fields of a unet/config.json, defaults filled, per-level fields as lists.

    `num_attention_heads`, when set, is what diffusers uses as the head count (it then ignores
    `attention_head_dim`)."""
    values = {k: folder_config.get(k, default) for k, default in CHECKED_DEFAULTS.items()}
    if folder_config.get("num_attention_heads") is not None:
        values["attention_head_dim"] = folder_config["num_attention_heads"]
    levels = len(values["block_out_channels"])
    for name in PER_LEVEL:
        if not isinstance(values[name], list):
            values[name] = [values[name]] * levels
    return values
