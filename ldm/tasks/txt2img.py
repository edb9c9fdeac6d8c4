"""txt2img: the latent diffusion pipeline (LDM, Rombach et al. 2022, sec. 3.3), step by step.

    prompt -> tokens -> context c (and the negative prompt's, for guidance)
    x_T ~ N(0, I) per image, from its own seed, on the CPU
    sampler (samplers.SAMPLERS[sampler]) with classifier-free guidance -> z_0
    image = D(z_0 / scale)
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .common import (ArgumentError, check_model, check_output, check_sampling, effective_eta, finish,
                     generators_for, guidance_contexts, initial_noise, prompts_for, run_sampler, seeds_for)

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


@torch.no_grad()
def txt2img(sd: StableDiffusion, prompt: str | Sequence[str], *, negative_prompt: str = "", steps: int = 50,
            sampler: str = "ddim", guidance_scale: float = 7.5, eta: float | None = None, karras: bool = False,
            height: int | None = None,
            width: int | None = None, seed: int | None = None, n: int = 1, x_T: torch.Tensor | None = None,
            output: str = "pil", callback: Callable | None = None, progress: bool = True):
    """Text to image. -> list of PIL images | images [n, 3, H, W] in [0, 1] ("tensor") | the
    final latent in x_T's scaled space ("latent").

    sampler: a name of samplers.SAMPLERS ("ddim", "euler_a", "dpmpp_2m", ...). eta: the noise the
    sampler adds each step (None: its own default, 0 for DDIM, 1 for the ancestral and SDE ones).
    karras: Karras et al.'s spacing of the noise levels (the k-diffusion samplers only).
    seed: image i gets seed + i (None: a random one). x_T: the starting noise [n, C, h, w] instead
    of the seeded draw (it sets the size). callback(i, t, x_t, pred_x0) after every step.
    """
    check_model(sd, "txt2img")
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, karras=karras)
    check_output(output)
    prompts = prompts_for(prompt, n)
    batch, f = len(prompts), sd.config.autoencoder.downsampling_factor
    seeds = seeds_for(seed, batch)
    if x_T is not None:
        expected = (batch, sd.config.latent_channels)
        if x_T.ndim != 4 or tuple(x_T.shape[:2]) != expected:
            raise ValueError(f"x_T must have shape [{batch}, {sd.config.latent_channels}, h, w], got {list(x_T.shape)}")
        height, width = x_T.shape[2] * f, x_T.shape[3] * f
    height = sd.config.image_size if height is None else height
    width = sd.config.image_size if width is None else width
    check_size(sd, height=height, width=width)
    if x_T is None:
        x_T = initial_noise(seeds, (sd.config.latent_channels, height // f, width // f))
    x_T = x_T.to(sd.device, torch.float32)  # the sampler's arithmetic is float32 (run_sampler)

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    # The sampler's noise (eta > 0, ancestral, SDE): each image's from its own generator, after its x_T draw.
    generators = generators_for(seeds)
    for g in generators:
        torch.randn(x_T.shape[1:], generator=g)
    z = run_sampler(sd, x_T, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    karras=karras, generators=generators, callback=callback, progress=progress)
    return finish(sd, z, output, prompts=prompts, seeds=seeds, negative_prompt=negative_prompt, steps=steps,
                  sampler=sampler, karras=karras, guidance_scale=guidance_scale, eta=effective_eta(sampler, eta))


def check_size(sd: StableDiffusion, **sizes: int) -> None:
    """height and width: positive multiples of what the VAE and the UNet's halvings need."""
    f = sd.config.autoencoder.downsampling_factor
    multiple = f * sd.unet.downsampling_factor
    for name, value in sizes.items():
        if not isinstance(value, numbers.Integral) or value <= 0 or value % multiple:
            raise ArgumentError(name, value, f"image sizes must be positive multiples of {multiple} for this "
                                             f"{sd.variant} model (the latent, 1/{f} of the image, is halved "
                                             f"{len(sd.config.unet.channel_mult) - 1} times)")
