"""depth2img: img2img conditioned on the image's depth, as the v2 repository's
scripts/gradio/depth2img.py drives LatentDepth2ImageDiffusion (its `paint` and `predict`):

    d = MiDaS(AddMiDaS(image))                      [B, 1, h', w'] relative inverse depth
        (or the caller's depth map instead)
    c_concat = 2 (d~ - min d~) / (max d~ - min d~) - 1,  d~ = d bicubic to the latent's size,
        min and max per image                       [B, 1, H/8, W/8], beside z_t in both branches
    z_0 = scale * a sample of q(z | image)          (the first draw of each image's seed)
    t_enc = min(int(strength * steps), steps - 1)
    z_0 noised to DDIM step t_enc with x_T (the second draw), then t_enc steps down -> image

At strength 1.0 the script starts from x_T itself, pure noise, and still runs only steps - 1 steps
(t_enc is capped at steps - 1; DDIM then starts from step index steps - 2): the original's quirk,
reproduced with DDIM, the script's sampler. The other samplers start at strength 1.0 from x_T at the
top of their schedule and run all of it, as their txt2img does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..modules.midas.transform import midas_input
from ..precision import dtype_of
from .common import (check_model, check_output, check_sampling, effective_eta, finish, generators_for,
                     guidance_contexts, image_to_tensor, posterior_sample, prompts_for_images, run_sampler, seeds_for)
from .img2img import check_strength

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion


def check_depth_model(sd: StableDiffusion) -> None:
    if sd.depth_model is None:
        source = f"{sd.source}" if sd.source is not None else f"this {sd.config.name} model"
        raise ValueError(f"{source} carries no MiDaS weights (depth_model.model.*), so it cannot estimate depth; "
                         "give depth2img a depth map (depth=...), or load the full 512-depth-ema checkpoint")


@torch.no_grad()
def estimate_depth(sd: StableDiffusion, image) -> torch.Tensor:
    """MiDaS's depth of the image (PIL, or [B, 3, H, W] in [-1, 1]; cropped to the multiple of 64
    pixels depth2img crops it to): [B, 1, h, w] at the size AddMiDaS resizes it to (384 on one side,
    multiples of 32), relative inverse depth (larger = nearer, >= 0), as the original's
    MiDaSInference returns it."""
    check_model(sd, "depth2img")
    check_depth_model(sd)
    images = image_to_tensor(image, sd.config.autoencoder.downsampling_factor * sd.unet.downsampling_factor)
    images = images.to(sd.device)
    return sd.depth_model(midas_input(images).to(dtype_of(sd.depth_model))).float()


def depth_image(depth: torch.Tensor) -> list[Image.Image]:
    """Depth maps [B, 1, h, w] as greyscale images, as the gradio demo shows them: each map scaled by
    its own min and max to [0, 255] and truncated to uint8 (white = near)."""
    low = depth.amin(dim=(1, 2, 3), keepdim=True)
    high = depth.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (depth - low) / (high - low).clamp_min(torch.finfo(depth.dtype).tiny)
    return [Image.fromarray((d[0].cpu().numpy() * 255.0).astype("uint8")) for d in scaled]


def depth_condition(depth: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """The UNet's fifth channel: depth [B, 1, h, w] bicubic to the latent's size (align_corners
    False), then 2 (d - min) / (max - min) - 1 per image (the gradio script's form: no epsilon)."""
    depth = F.interpolate(depth.float(), size=latent_size, mode="bicubic", align_corners=False)
    low = depth.amin(dim=(1, 2, 3), keepdim=True)
    high = depth.amax(dim=(1, 2, 3), keepdim=True)
    if bool((high == low).any()):
        raise ValueError("the depth map is constant (after resizing to the latent), so it cannot be normalised to "
                         "[-1, 1]; give a depth map that varies")
    return 2.0 * (depth - low) / (high - low) - 1.0


@torch.no_grad()
def depth2img(sd: StableDiffusion, image, prompt: str | Sequence[str], *, strength: float = 0.8,
              depth: torch.Tensor | None = None, negative_prompt: str = "", steps: int = 50, sampler: str = "ddim",
              guidance_scale: float = 9.0, eta: float | None = None, karras: bool = False, seed: int | None = None,
              n: int = 1, x_T: torch.Tensor | None = None, output: str = "pil", callback: Callable | None = None,
              progress: bool = True):
    """Image (PIL, or [B, 3, H, W] in [-1, 1]) to image, keeping its depth: MiDaS's depth map of the
    image (or `depth` [1 or B, 1, h, w], any size: larger = nearer, as MiDaS's) conditions every
    step. x_T [B, 4, H/8, W/8]: the unit-variance draw that noises the image's latent (strength < 1)
    or is the start (strength 1). The rest as img2img's."""
    check_model(sd, "depth2img")
    check_sampling(sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, karras=karras,
                   starts_late=True)
    check_output(output)
    check_strength(strength)
    f = sd.config.autoencoder.downsampling_factor
    images = image_to_tensor(image, f * sd.unet.downsampling_factor)
    prompts = prompts_for_images(prompt, n, images.shape[0])
    batch = len(prompts)
    latent_shape = (sd.config.latent_channels, images.shape[2] // f, images.shape[3] // f)
    if depth is not None and (not isinstance(depth, torch.Tensor) or depth.ndim != 4 or depth.shape[1] != 1
                              or depth.shape[0] not in (1, batch)):
        shape = list(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise ValueError(f"depth must be a [1 or {batch}, 1, h, w] tensor (one map, or one per image), got {shape}")
    if x_T is not None and tuple(x_T.shape) != (batch, *latent_shape):
        raise ValueError(f"x_T must have shape {[batch, *latent_shape]}, got {list(x_T.shape)}")
    if depth is None:
        check_depth_model(sd)
        depth = estimate_depth(sd, images)
    concat = depth_condition(depth.to(sd.device, torch.float32), latent_shape[1:]).expand(batch, -1, -1, -1)
    images = images.expand(batch, -1, -1, -1).to(sd.device)
    seeds = seeds_for(seed, batch)
    described = dict(prompts=prompts, seeds=seeds, negative_prompt=negative_prompt, steps=steps, sampler=sampler,
                     karras=karras, guidance_scale=guidance_scale, eta=effective_eta(sampler, eta), strength=strength)

    # Each image's own generator draws, in order: the posterior sample, x_T (the noise to step
    # t_enc, or the start), then the sampler's own noise (eta > 0, ancestral, SDE).
    generators = generators_for(seeds)
    z_0 = posterior_sample(sd, images, generators)
    drawn = torch.stack([torch.randn(latent_shape, generator=g) for g in generators])
    x_T = (drawn if x_T is None else x_T).to(z_0)
    t_enc = min(int(strength * steps), steps - 1)  # the script's predict(): never the whole schedule
    if t_enc == 0:
        return finish(sd, z_0, output, **described)  # nothing to denoise: the VAE round trip, as img2img
    if strength == 1.0:  # do_full_sample: from x_T itself
        start = {"x_0": None, "t_enc": t_enc} if sampler == "ddim" else {}
    else:
        start = {"x_0": z_0, "t_enc": t_enc}

    cond, uncond = guidance_contexts(sd, prompts, negative_prompt, guidance_scale)
    z = run_sampler(sd, x_T, cond, uncond, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                    karras=karras, generators=generators, callback=callback, progress=progress, concat=concat,
                    **start)
    return finish(sd, z, output, **described)
