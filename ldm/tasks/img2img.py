"""img2img: SDEdit (Meng et al. 2022) in latent space, as the original scripts/img2img.py does it.

    z_0 = scale * a sample of q(z | image)               (the original's get_first_stage_encoding)
    z_t = z_0 noised to DDIM step t_enc = int(strength * steps)
    the sampler from step t_enc down, with classifier-free guidance -> z_0'
    image = D(z_0' / scale)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from samplers.ddim import noise_to_step

from .common import (ArgumentError, check_model, check_output, check_sampling, finish, generators_for,
                     guidance_contexts, image_to_tensor, prompts_for, run_sampler, seeds_for)

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= 1.0:
        raise ArgumentError("strength", strength, "must be between 0 and 1")


@torch.no_grad()
def img2img(sd: StableDiffusion, image, prompt: str | Sequence[str], *, strength: float = 0.75,
            negative_prompt: str = "", steps: int = 50, sampler: str = "ddim", guidance_scale: float = 7.5,
            eta: float = 0.0, seed: int | None = None, n: int = 1, output: str = "pil",
            callback: Callable | None = None, progress: bool = True):
    """Image (PIL, or [B, 3, H, W] in [-1, 1]) to image: strength 0 gives the VAE round trip of the
    input, 1 starts from pure noise. It starts part-way down the schedule, so the sampler must be
    one that can (DDIM, as the original)."""
    check_model(sd, "img2img")
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, starts_late=True)
    check_output(output)
    check_strength(strength)
    f = sd.config.autoencoder.downsampling_factor
    images = image_to_tensor(image, f * sd.unet.downsampling_factor)
    prompts = prompts_for(prompt, n if images.shape[0] == 1 else images.shape[0])
    batch = len(prompts)
    if images.shape[0] not in (1, batch):
        raise ValueError(f"{images.shape[0]} images for {batch} prompts; give one image or one per prompt")
    images = images.expand(batch, -1, -1, -1).to(sd.device, sd.dtype)
    seeds = seeds_for(seed, batch)
    described = dict(prompts=prompts, seeds=seeds, negative_prompt=negative_prompt, steps=steps, sampler=sampler,
                     guidance_scale=guidance_scale, eta=eta, strength=strength)

    # Each image's own generator draws, in order: the posterior sample, the noise to step t_enc,
    # then (eta > 0) the sampler's noise.
    generators = generators_for(seeds)
    posterior = sd.vae.encode(images)
    latent_shape = posterior.mean.shape[1:]
    eps = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(posterior.mean)
    # z_0 = scale * a sample of q(z | x) (the original's get_first_stage_encoding).
    z_0 = (posterior.mean + posterior.std * eps) * sd.config.scale_factor
    t_enc = int(strength * steps)  # the original's number of DDIM steps to run back
    if t_enc == 0:
        return finish(sd, z_0, output, **described)  # nothing to denoise: the VAE round trip of the input
    noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(z_0)
    z_t = noise_to_step(z_0, noise, sd.schedule, steps, t_enc)

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    z = run_sampler(sd, z_t, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    generators=generators, callback=callback, progress=progress, first_index=t_enc)
    return finish(sd, z, output, **described)
