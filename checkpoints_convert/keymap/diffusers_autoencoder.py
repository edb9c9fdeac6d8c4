"""Autoencoder: our names <-> diffusers' `AutoencoderKL` (the `vae/` folder of a pipeline).

Both number the encoder's levels from full resolution down and the decoder's in the order they run
(deepest first), so levels map one to one: `levels.{i}` -> `down_blocks.{i}` / `up_blocks.{i}`.
One change of shape: the mid-block attention's q, k, v and output projections are 1x1 convolutions
[C, C, 1, 1] in ours (as in the original checkpoints) and Linear layers [C, C] in diffusers; a 1x1
convolution is a per-position Linear, so only the two trailing axes of size 1 go (`squeezed`).
"""

from __future__ import annotations

from ldm.config import AutoencoderConfig

from .diffusers_component import ComponentMap

PARAMS = ("weight", "bias")

# Inside one ResBlock (diffusers' ResnetBlock2D): ours -> diffusers.
RES_BLOCK = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}
RES_BLOCK_SHORTCUT = {"shortcut": "conv_shortcut"}  # only where the block changes width
# The mid block of the encoder and of the decoder.
MID_RES_BLOCKS = {"res_block_1": "resnets.0", "res_block_2": "resnets.1"}
ATTENTION = "attentions.0"
ATTENTION_NORM = {"norm": "group_norm"}
ATTENTION_PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}  # weights squeezed
# Each side of the encoder and decoder, and outside them.
ENDS = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
TOP_LEVEL = {"moments_conv": "quant_conv", "latent_conv": "post_quant_conv"}


def _params(table: dict[str, str], ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}{o}.{p}": f"{theirs}{t}.{p}" for o, t in table.items() for p in PARAMS}


def _res_block(ours: str, theirs: str, changes_width: bool) -> dict[str, str]:
    return _params({**RES_BLOCK, **(RES_BLOCK_SHORTCUT if changes_width else {})}, ours + ".", theirs + ".")


def _mid_block(ours: str, theirs: str) -> tuple[dict[str, str], dict[str, str]]:
    """(renames, squeezed) of one mid block."""
    renames = {}
    for o, t in MID_RES_BLOCKS.items():
        renames |= _res_block(f"{ours}.{o}", f"{theirs}.{t}", changes_width=False)
    renames |= _params(ATTENTION_NORM, f"{ours}.attention.", f"{theirs}.{ATTENTION}.")
    projections = _params(ATTENTION_PROJECTIONS, f"{ours}.attention.", f"{theirs}.{ATTENTION}.")
    squeezed = {k: v for k, v in projections.items() if k.endswith(".weight")}
    renames |= {k: v for k, v in projections.items() if k.endswith(".bias")}
    return renames, squeezed


def ours_to_diffusers(config: AutoencoderConfig) -> ComponentMap:
    """Every key of our AutoencoderKL -> the same tensor's key in diffusers' AutoencoderKL."""
    widths = [config.base_channels * m for m in config.channel_mult]
    levels = len(widths)
    table = _params(TOP_LEVEL, "", "")
    table |= _params(ENDS, "encoder.", "encoder.") | _params(ENDS, "decoder.", "decoder.")

    in_width = config.base_channels
    for i, width in enumerate(widths):
        for j in range(config.num_res_blocks):
            table |= _res_block(f"encoder.levels.{i}.res_blocks.{j}", f"encoder.down_blocks.{i}.resnets.{j}",
                                j == 0 and in_width != width)
        if i != levels - 1:
            table |= _params({"conv": "conv"}, f"encoder.levels.{i}.downsample.",
                             f"encoder.down_blocks.{i}.downsamplers.0.")
        in_width = width

    # Decoder level i runs i-th: width widths[levels-1-i], fed by the level before it (the mid block first).
    in_width = widths[-1]
    for i in range(levels):
        width = widths[levels - 1 - i]
        for j in range(config.num_res_blocks + 1):
            table |= _res_block(f"decoder.levels.{i}.res_blocks.{j}", f"decoder.up_blocks.{i}.resnets.{j}",
                                j == 0 and in_width != width)
        if i != levels - 1:
            table |= _params({"conv": "conv"}, f"decoder.levels.{i}.upsample.",
                             f"decoder.up_blocks.{i}.upsamplers.0.")
        in_width = width

    squeezed = {}
    for side in ("encoder", "decoder"):
        renames, side_squeezed = _mid_block(f"{side}.mid", f"{side}.mid_block")
        table |= renames
        squeezed |= side_squeezed
    return ComponentMap(table, squeezed=squeezed)


def vae_config(config: AutoencoderConfig, scale_factor: float, sample_size: int) -> dict:
    """The `vae/config.json` of diffusers' AutoencoderKL. diffusers has one `latent_channels` for
    both the original's z_channels and embed_dim (equal in every Stable Diffusion VAE)."""
    if config.z_channels != config.embed_dim:
        raise ValueError(f"diffusers' AutoencoderKL needs z_channels == embed_dim (its one latent_channels); "
                         f"this autoencoder has {config.z_channels} and {config.embed_dim}")
    levels = len(config.channel_mult)
    return {
        "_class_name": "AutoencoderKL",
        "sample_size": sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": [config.base_channels * m for m in config.channel_mult],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": config.num_res_blocks,
        "latent_channels": config.z_channels,
        "norm_num_groups": config.norm_groups,
        "act_fn": "silu",
        "scaling_factor": scale_factor,
        "shift_factor": None,
        "latents_mean": None,
        "latents_std": None,
        "force_upcast": True,  # diffusers decodes in float32 when the pipeline runs in float16, as its SD folders do
        "use_quant_conv": True,
        "use_post_quant_conv": True,
        "mid_block_add_attention": True,
    }


# Reading a folder: the fields checked against `vae_config`, with diffusers' default for each.
CHECKED_DEFAULTS = {
    "in_channels": 3, "out_channels": 3, "block_out_channels": [64], "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32,
    "act_fn": "silu", "scaling_factor": 0.18215, "shift_factor": None, "use_quant_conv": True,
    "use_post_quant_conv": True, "mid_block_add_attention": True,
}


def normalised(folder_config: dict) -> dict:
    return {k: folder_config.get(k, default) for k, default in CHECKED_DEFAULTS.items()}
