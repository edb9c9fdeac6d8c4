"""img2img: SDEdit (Meng et al. 2022) in latent space, as the original scripts/img2img.py does it.

    z_0 = scale * a sample of q(z | image)               (the original's get_first_stage_encoding)
    t_enc = int(strength * steps)
    the sampler from z_0 noised to its step t_enc, down, with classifier-free guidance -> z_0'
    image = D(z_0' / scale)

Each sampler starts where its original would (samplers/common.py: x_0, t_enc): DDIM as the
original script (noised to DDIM step t_enc, then t_enc steps), the k-diffusion samplers as
AUTOMATIC1111 (the sigma t_enc + 1 steps from the end), DPM-Solver++ at its time grid's point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .common import (ArgumentError, check_model, check_output, check_sampling, effective_eta, finish,
                     generators_for, guidance_contexts, image_to_tensor, posterior_sample, prompts_for_images,
                     run_sampler, seeds_for)

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= 1.0:
        raise ArgumentError("strength", strength, "must be between 0 and 1")


@torch.no_grad()
def img2img(sd: StableDiffusion, image, prompt: str | Sequence[str], *, strength: float = 0.75,
            negative_prompt: str = "", steps: int = 50, sampler: str = "ddim", guidance_scale: float = 7.5,
            eta: float | None = None, karras: bool = False, seed: int | None = None, n: int = 1, output: str = "pil",
            callback: Callable | None = None, progress: bool = True):
    """Image (PIL, or [B, 3, H, W] in [-1, 1]) to image: strength 0 gives the VAE round trip of the
    input, 1 starts from (nearly) pure noise. sampler, eta, karras: as txt2img's."""
    check_model(sd, "img2img")
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, karras=karras,
                   starts_late=True)
    check_output(output)
    check_strength(strength)
    f = sd.config.autoencoder.downsampling_factor
    images = image_to_tensor(image, f * sd.unet.downsampling_factor)
    prompts = prompts_for_images(prompt, n, images.shape[0])
    batch = len(prompts)
    images = images.expand(batch, -1, -1, -1).to(sd.device)
    seeds = seeds_for(seed, batch)
    described = dict(prompts=prompts, seeds=seeds, negative_prompt=negative_prompt, steps=steps, sampler=sampler,
                     karras=karras, guidance_scale=guidance_scale, eta=effective_eta(sampler, eta), strength=strength)

    # Each image's own generator draws, in order: the posterior sample, the noise to step t_enc,
    # then the sampler's own noise (eta > 0, ancestral, SDE).
    generators = generators_for(seeds)
    z_0 = posterior_sample(sd, images, generators)
    latent_shape = z_0.shape[1:]
    t_enc = int(strength * steps)  # the original's number of DDIM steps to run back
    if t_enc == 0:
        return finish(sd, z_0, output, **described)  # nothing to denoise: the VAE round trip of the input
    noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(z_0)

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    z = run_sampler(sd, noise, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    karras=karras, generators=generators, callback=callback, progress=progress, x_0=z_0, t_enc=t_enc)
    return finish(sd, z, output, **described)
