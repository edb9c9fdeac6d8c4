"""upscale: the x4 super-resolution model, as the v2 repository's scripts/gradio/superresolution.py
drives LatentUpscaleDiffusion:

    x_low in [-1, 1], [B, 3, h, w]: the low-resolution image
    x_aug = sqrt(a_l) x_low + sqrt(1 - a_l) eps,  a_l = alpha_bar of the upscaler's OWN schedule at
            l = noise_level (its low_scale_model: linear 1e-4..2e-2, 1000 steps; l in 0..350)
    x_T ~ N(0, I) [B, 4, h, w] per image: the latent is at the input's size (the f4 VAE makes 4x)
    the sampler, the UNet taking [z_t, x_aug] (4 + 3 = 7 channels) and the class label l, in both
        branches of guidance -> z_0;  image = D(z_0 / scale)  [B, 3, 4h, 4w]

An input that is not a multiple of what the UNet needs is padded with its edge pixels (the
original's pad_image) and the output cropped back to 4x the input (output="latent" gives the
padded latent).

Tiling (tile=N, or "auto" for inputs too large to run whole): the UNet runs on overlapping N x N
windows of the latent at every step and the decoder on overlapping windows of the final latent,
blended as MultiDiffusion blends them (tiles.py); the random draws are the whole image's, so a
tile no smaller than the input is the untiled run bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F

from samplers import NoiseSchedule

from .common import (ArgumentError, check_model, check_output, check_sampling, effective_eta, finish,
                     generators_for, guidance_contexts, image_to_tensor, initial_noise, prompts_for_images,
                     run_sampler, seeds_for)
from .tiles import AUTO_TILE, AUTO_WHOLE_PIXELS

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


def check_noise_level(noise_level: int, most: int) -> None:
    if isinstance(noise_level, bool) or not isinstance(noise_level, int) or not 0 <= noise_level <= most:
        raise ArgumentError("noise_level", noise_level, f"must be an int in 0..{most} (the upscaler's noise levels)")


def noise_augmented(x_low: torch.Tensor, noise_level: int, schedule: NoiseSchedule, noise: torch.Tensor
                    ) -> torch.Tensor:
    """q_sample of the low_scale_model: sqrt(a_l) x_low + sqrt(1 - a_l) noise, the square roots taken
    in float64 and stored as float32, as its buffers are (upscaling.py register_schedule)."""
    a = schedule.alphas_cumprod[noise_level]
    return a.sqrt().float().to(x_low) * x_low + (1 - a).sqrt().float().to(x_low) * noise


def check_tile(tile, multiple: int) -> None:
    if tile is None or tile == "auto":
        return
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 2 * multiple or tile % multiple:
        raise ArgumentError("tile", tile, f"must be None, 'auto' or a multiple of {multiple} of at least "
                                          f"{2 * multiple} (the side of a tile, in input pixels)")


def tile_for(tile, height: int, width: int) -> int | None:
    """The tile side a run uses: tile="auto" runs inputs of up to AUTO_WHOLE_PIXELS whole and tiles
    larger ones in AUTO_TILE windows; an int is that size; None is whole."""
    if tile == "auto":
        return None if height * width <= AUTO_WHOLE_PIXELS else AUTO_TILE
    return tile


@torch.no_grad()
def upscale(sd: StableDiffusion, image, prompt: str | Sequence[str], *, noise_level: int = 20,
            negative_prompt: str = "", steps: int = 50, sampler: str = "ddim", guidance_scale: float = 9.0,
            eta: float | None = None, karras: bool = False, seed: int | None = None, n: int = 1,
            x_T: torch.Tensor | None = None, augmentation_noise: torch.Tensor | None = None, output: str = "pil",
            callback: Callable | None = None, progress: bool = True, tile: int | str | None = "auto"):
    """4x the image (PIL, or [B, 3, h, w] in [-1, 1]). noise_level: how much noise the low-resolution
    image gets before the model sees it (0..350; more lets the model invent more detail).
    augmentation_noise [B, 3, h, w]: that noise instead of the seeded draw. tile: None runs the
    whole image at once; N runs the UNet and the decoder on overlapping N x N windows of the input's
    size (a multiple of the UNet's 8), blended; "auto" tiles (in 192s) only inputs of more than
    256 x 256 pixels. The rest as txt2img's."""
    check_model(sd, "upscale")
    augmentation = sd.config.noise_augmentation
    check_noise_level(noise_level, augmentation.max_noise_level)
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, karras=karras)
    check_output(output)
    multiple = sd.unet.downsampling_factor  # the latent is at the input's size
    check_tile(tile, multiple)
    images = image_to_tensor(image, 1)
    prompts = prompts_for_images(prompt, n, images.shape[0])
    batch = len(prompts)
    height, width = images.shape[2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    x_low = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate").expand(batch, -1, -1, -1).to(sd.device)
    latent_shape = (sd.config.latent_channels, *x_low.shape[2:])
    for name, given, shape in (("x_T", x_T, (batch, *latent_shape)), ("augmentation_noise", augmentation_noise,
                                                                       tuple(x_low.shape))):
        if given is not None and tuple(given.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(given.shape)}")
    seeds = seeds_for(seed, batch)
    x_T = (initial_noise(seeds, latent_shape) if x_T is None else x_T).to(sd.device, torch.float32)

    # Each image's own generator draws, in order: its x_T (drawn above from the same seed; skipped
    # here), the augmentation noise, then the sampler's own noise (eta > 0, ancestral, SDE).
    generators = generators_for(seeds)
    for g in generators:
        torch.randn(latent_shape, generator=g)
    if augmentation_noise is None:
        augmentation_noise = torch.stack([torch.randn(x_low.shape[1:], generator=g) for g in generators])
    s = augmentation.schedule
    x_aug = noise_augmented(x_low, noise_level, NoiseSchedule.linear(s.num_timesteps, s.linear_start, s.linear_end),
                            augmentation_noise.to(x_low))
    labels = torch.full((batch,), noise_level, dtype=torch.long, device=sd.device)

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    z = run_sampler(sd, x_T, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    karras=karras, generators=generators, callback=callback, progress=progress, concat=x_aug,
                    class_labels=labels, tile=tile_for(tile, *x_low.shape[2:]))
    f = sd.config.autoencoder.downsampling_factor
    return finish(sd, z, output, prompts=prompts, seeds=seeds, crop=(height * f, width * f),
                  tile=tile_for(tile, *x_low.shape[2:]), progress=progress,
                  negative_prompt=negative_prompt, steps=steps, sampler=sampler, karras=karras,
                  guidance_scale=guidance_scale, eta=effective_eta(sampler, eta))
