"""The autoencoder's key table: original `first_stage_model.*` names (prefix removed) -> ours.

What moves, and why:
- `down.{i}.block.{j}`   -> `levels.{i}.res_blocks.{j}`  (encoder; same order)
- `up.{i}.block.{j}`     -> `levels.{L-1-i}.res_blocks.{j}`  (decoder: the original numbers its
  levels by resolution, `up.0` being the LAST to run; ours are numbered in the order they run)
- `mid.block_1 / attn_1 / block_2` -> `mid.res_block_1 / attention / res_block_2`
- attention `q, k, v, proj_out` -> `to_q, to_k, to_v, to_out` (all 1x1 convs, shapes unchanged)
- ResBlock `nin_shortcut` -> `shortcut`
- `quant_conv` -> `moments_conv`, `post_quant_conv` -> `latent_conv`
No tensor changes shape. The original's (empty) `attn` lists at each level have no keys.
"""

from __future__ import annotations

from ldm.config import AutoencoderConfig

PARAMS = ("weight", "bias")  # every conv and GroupNorm in the autoencoder has both

# Inside one ResBlock: original sub-module -> ours.
RES_BLOCK = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}
RES_BLOCK_SHORTCUT = {"nin_shortcut": "shortcut"}  # only where the block changes width

# The middle of the encoder and of the decoder.
MID_BLOCK = {"block_1": "res_block_1", "attn_1": "attention", "block_2": "res_block_2"}
ATTENTION = {"norm": "norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out"}

# Outside the encoder and decoder.
TOP_LEVEL = {"quant_conv": "moments_conv", "post_quant_conv": "latent_conv"}


def _res_block(original: str, ours: str, changes_width: bool) -> dict[str, str]:
    parts = dict(RES_BLOCK, **(RES_BLOCK_SHORTCUT if changes_width else {}))
    return {f"{original}.{o}.{p}": f"{ours}.{n}.{p}" for o, n in parts.items() for p in PARAMS}


def _mid_block(original: str, ours: str) -> dict[str, str]:
    table = {}
    for o, n in MID_BLOCK.items():
        if o == "attn_1":
            table.update({f"{original}.{o}.{a}.{p}": f"{ours}.{n}.{b}.{p}" for a, b in ATTENTION.items() for p in PARAMS})
        else:
            table.update(_res_block(f"{original}.{o}", f"{ours}.{n}", changes_width=False))
    return table


def _ends(original: str, ours: str) -> dict[str, str]:
    """conv_in, norm_out, conv_out: same names on both sides."""
    return {f"{original}.{m}.{p}": f"{ours}.{m}.{p}" for m in ("conv_in", "norm_out", "conv_out") for p in PARAMS}


def original_to_ours(config: AutoencoderConfig) -> dict[str, str]:
    """Every key of the original AutoencoderKL's state dict -> the same tensor's key in ours."""
    widths = [config.base_channels * m for m in config.channel_mult]
    num_levels = len(widths)
    table: dict[str, str] = {}

    # Encoder: level i turns width widths[i-1] (base_channels for i = 0) into widths[i].
    table.update(_ends("encoder", "encoder"))
    in_width = config.base_channels
    for i, width in enumerate(widths):
        for j in range(config.num_res_blocks):
            changes_width = j == 0 and in_width != width
            table.update(_res_block(f"encoder.down.{i}.block.{j}", f"encoder.levels.{i}.res_blocks.{j}", changes_width))
        if i != num_levels - 1:
            table.update({f"encoder.down.{i}.downsample.conv.{p}": f"encoder.levels.{i}.downsample.conv.{p}" for p in PARAMS})
        in_width = width
    table.update(_mid_block("encoder.mid", "encoder.mid"))

    # Decoder: original level i (resolution order) is our level num_levels-1-i (run order).
    table.update(_ends("decoder", "decoder"))
    table.update(_mid_block("decoder.mid", "decoder.mid"))
    for i in reversed(range(num_levels)):
        ours = num_levels - 1 - i
        in_width = widths[i + 1] if i + 1 < num_levels else widths[-1]
        for j in range(config.num_res_blocks + 1):
            changes_width = j == 0 and in_width != widths[i]
            table.update(_res_block(f"decoder.up.{i}.block.{j}", f"decoder.levels.{ours}.res_blocks.{j}", changes_width))
        if i != 0:
            table.update({f"decoder.up.{i}.upsample.conv.{p}": f"decoder.levels.{ours}.upsample.conv.{p}" for p in PARAMS})

    table.update({f"{o}.{p}": f"{n}.{p}" for o, n in TOP_LEVEL.items() for p in PARAMS})
    return table
