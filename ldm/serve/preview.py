"""The live preview /progress sends: image 0's pred_x0 as a picture, made cheaply.

For the Stable Diffusion autoencoder's latent space (v1 and v2 share it: the f8 VAE), A1111's
"Approx cheap" (modules/sd_vae_approx.py cheap_approximation): RGB as a fixed linear map of the 4
latent channels, at the latent's size. Another autoencoder (the demo model's f4 one) has a latent
space of its own, for which no such map is known: its decoder, which is small, runs instead.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..precision import decode

# [latent channel, RGB] for the SD f8 VAE's scaled latent -> roughly [-1, 1] (A1111's coefficients).
SD_LATENT_TO_RGB = torch.tensor([[0.298, 0.207, 0.208],
                                 [0.187, 0.286, 0.173],
                                 [-0.158, 0.189, 0.264],
                                 [-0.184, -0.271, -0.473]])


@torch.no_grad()
def preview(sd, pred_x0: torch.Tensor) -> Image.Image:
    """pred_x0 [B, C, h, w] (the scaled latent) -> image 0 as a PIL picture."""
    latent = pred_x0[:1].float().cpu()
    if sd.config.autoencoder.downsampling_factor == 8 and latent.shape[1] == 4:
        rgb = torch.einsum("blhw,lr->brhw", latent, SD_LATENT_TO_RGB)
    else:
        rgb = decode(sd.vae, (latent / sd.config.scale_factor).to(sd.device)).cpu()
    array = ((rgb[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8))
