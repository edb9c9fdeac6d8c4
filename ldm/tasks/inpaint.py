"""inpaint: repaint the masked part of an image with an inpainting model (LDM, Rombach et al. 2022,
sec. 4.5), as the v2 repository's scripts/gradio/inpainting.py drives LatentInpaintDiffusion:

    mask m: white / 1 = repaint, binarised at 0.5 (make_batch_sd)
    masked image = image * (m < 0.5)
    c_concat = [m resized (nearest) to the latent, scale * a sample of q(z | masked image)]   [B, 5, h, w]
    x_T ~ N(0, I) per image -> the sampler, the UNet taking [z_t, c_concat] (4 + 5 = 9 channels)
        at every step, in both branches of guidance (the unconditional one keeps c_concat) -> z_0
    image = D(z_0 / scale)

Every registered sampler runs it. The mask is checked before any work: its size must be the
image's, it must have a white pixel, grey values are binarised with a warning, and a mask with
transparency is refused (which of its colour or its alpha is meant cannot be told).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .common import (check_model, check_output, check_sampling, effective_eta, finish, generators_for,
                     guidance_contexts, image_to_tensor, initial_noise, posterior_sample, prompts_for, run_sampler,
                     seeds_for, warn)

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


def mask_to_tensor(mask, size: tuple[int, int]) -> torch.Tensor:
    """A PIL mask (any mode without transparency; its grey level) or a [B, 1, H, W] tensor in [0, 1]
    -> [B, 1, H, W] of 0 and 1 (1: repaint), for an image of `size` (H, W)."""
    if isinstance(mask, Image.Image):
        if "A" in mask.getbands() and mask.getchannel("A").getextrema()[0] < 255:
            raise ValueError(f"the mask ({mask.mode}) has transparent pixels: give a mask without transparency, "
                             "white where the image is to be repainted, black elsewhere")
        tensor = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    elif isinstance(mask, torch.Tensor):
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask tensor must have shape [B, 1, H, W] in [0, 1], got {list(mask.shape)}")
        tensor = mask.float().cpu()
    else:
        raise TypeError(f"mask must be a PIL image or a [B, 1, H, W] tensor, got {type(mask).__name__}")
    if tuple(tensor.shape[2:]) != tuple(size):
        raise ValueError(f"the mask is {tensor.shape[3]}x{tensor.shape[2]} but the image {size[1]}x{size[0]}: "
                         "give a mask of the image's size")
    binary = (tensor >= 0.5).float()  # make_batch_sd: mask[mask < 0.5] = 0, mask[mask >= 0.5] = 1
    if not binary.flatten(1).amax(1).all():
        raise ValueError("the mask has no white pixel (>= 0.5), so there is nothing to repaint: white marks what "
                         "is repainted")
    if not torch.equal(binary, tensor):
        warn("the mask has grey values; it was binarised at 0.5 (white, >= 0.5: repaint), as the original does")
    return binary


@torch.no_grad()
def inpaint(sd: StableDiffusion, image, mask, prompt: str | Sequence[str], *, negative_prompt: str = "",
            steps: int = 50, sampler: str = "ddim", guidance_scale: float = 7.5, eta: float | None = None,
            karras: bool = False, seed: int | None = None, n: int = 1, x_T: torch.Tensor | None = None,
            output: str = "pil", callback: Callable | None = None, progress: bool = True):
    """Repaint where `mask` is white. image: PIL, or [B, 3, H, W] in [-1, 1]; mask: PIL (white =
    repaint) or [B, 1, H, W] in [0, 1], of the image's size. sampler, eta, karras, seed, x_T,
    output, callback: as txt2img's. -> as txt2img's."""
    check_model(sd, "inpaint")
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, karras=karras)
    check_output(output)
    f = sd.config.autoencoder.downsampling_factor
    multiple = f * sd.unet.downsampling_factor
    images = image_to_tensor(image, 1)
    masks = mask_to_tensor(mask, tuple(images.shape[2:]))
    # Sizes the UNet cannot take: image and mask cropped alike (image_to_tensor warns).
    images = image_to_tensor(images, multiple)
    masks = masks[:, :, : images.shape[2], : images.shape[3]]
    given = max(images.shape[0], masks.shape[0])
    prompts = prompts_for(prompt, n if given == 1 else given)
    batch = len(prompts)
    for name, tensor in (("images", images), ("masks", masks)):
        if tensor.shape[0] not in (1, batch):
            raise ValueError(f"{tensor.shape[0]} {name} for {batch} prompts; give one or one per prompt")
    images = images.expand(batch, -1, -1, -1).to(sd.device, torch.float32)
    masks = masks.expand(batch, -1, -1, -1).to(sd.device, torch.float32)
    seeds = seeds_for(seed, batch)
    latent_shape = (sd.config.latent_channels, images.shape[2] // f, images.shape[3] // f)
    if x_T is not None and tuple(x_T.shape) != (batch, *latent_shape):
        raise ValueError(f"x_T must have shape {[batch, *latent_shape]}, got {list(x_T.shape)}")
    x_T = (initial_noise(seeds, latent_shape) if x_T is None else x_T).to(sd.device, torch.float32)

    # Each image's own generator draws, in order: its x_T (drawn above from the same seed; skipped
    # here), the masked image's posterior sample, then the sampler's own noise (eta > 0, ancestral, SDE).
    generators = generators_for(seeds)
    for g in generators:
        torch.randn(latent_shape, generator=g)
    masked_latent = posterior_sample(sd, images * (masks < 0.5), generators)
    concat = torch.cat([F.interpolate(masks, size=latent_shape[1:]), masked_latent], dim=1)  # nearest

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    z = run_sampler(sd, x_T, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    karras=karras, generators=generators, callback=callback, progress=progress, concat=concat)
    return finish(sd, z, output, prompts=prompts, seeds=seeds, negative_prompt=negative_prompt, steps=steps,
                  sampler=sampler, karras=karras, guidance_scale=guidance_scale, eta=effective_eta(sampler, eta))
