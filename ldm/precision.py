"""Which float type each part of a run computes in.

The networks compute in the dtype their weights were loaded in (float32; bfloat16 on the CPU;
float16 on CUDA). Everything between them stays in float32: x_T, the sampler's update of x_t, the
noise schedule (float64 in samplers/schedule.py), guidance, the posterior sample, the mask and the
noise augmentation. Each network is handed its input in its own dtype and its output comes back
as float32. This is what the original's fp16 runs do under `torch.autocast` (scripts/txt2img.py:
`precision_scope = autocast`): its x_T is float32 and so is every sampler step, while the UNet's
matrix products run in half precision; and its v2 `--bf16` flag runs the same way on the CPU.

Inside the networks, the parts the original keeps in float32 stay there: the UNet's GroupNorm
(`GroupNorm32`, unet.py's Float32GroupNorm), the attention scores and softmax (attention.py's math
path; torch's fused CPU attention accumulates bfloat16 in float32 by itself), the timestep
embedding's frequencies.

A float16 VAE decode can overflow (float16 ends at 65504 and the SD decoder's activations exceed
it on some latents, the reason A1111 has `--no-half-vae`): `decode` notices a non-finite result
and redoes that decode in float32, with a warning, rather than return a black or speckled image.
"""

from __future__ import annotations

import torch
from torch import nn

from .modules.autoencoder import AutoencoderKL
from .warn import warn


def dtype_of(module: nn.Module) -> torch.dtype:
    """The float type a network computes in: its weights' dtype, or, for a network that stores them
    in another (memory.enable_layerwise_casting), the `compute_dtype` it casts them to."""
    return getattr(module, "compute_dtype", None) or next(module.parameters()).dtype


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX, what oneDNN needs). Without
    it, torch emulates: its convolutions fall back to a slow kernel (`_slow_conv2d_forward`) and the
    full-size UNet runs about 30x slower than in float32 (docs/performance.md)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated(device: torch.device, dtype: torch.dtype) -> None:
    """bfloat16 on a CPU without bfloat16 instructions: allowed (it halves the weights' memory), but said."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bfloat16():
        warn("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): torch emulates them, and a bfloat16 "
             "model runs about 30x slower than float32 here (docs/performance.md); use float32 unless memory is short")


def decode(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """D(z): the unscaled latent z [B, embed_dim, h, w] -> the image [B, 3, h*f, w*f] in float32,
    roughly in [-1, 1], decoded in the VAE's dtype; in float32 when that result is not finite.

    The float32 redo converts the decoder's weights in place and back: float16 and bfloat16 values
    are exact in float32, so the round trip leaves them bit for bit as they were, and no second
    copy of the decoder is held."""
    dtype = dtype_of(vae)
    image = vae.decode(z.to(dtype)).float()
    if dtype == torch.float32 or torch.isfinite(image).all():
        return image
    warn(f"the VAE decoder's {str(dtype).removeprefix('torch.')} result was not finite (inf or NaN: its "
         f"activations overflowed); this decode was redone in float32", RuntimeWarning)
    parts = (vae.latent_conv, vae.decoder)
    try:
        for part in parts:
            part.float()
        return vae.decode(z.float())
    finally:
        for part in parts:
            part.to(dtype)
