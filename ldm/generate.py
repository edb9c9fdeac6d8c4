"""txt2img and img2img: the latent diffusion pipeline (LDM, Rombach et al. 2022, sec. 3.3), step by step.

    prompt -> tokens -> context c (and the negative prompt's, for guidance)
    x_T ~ N(0, I) per image, from its own seed, on the CPU        (txt2img)
    or  z_0 = scale * E(image), noised to step t_enc               (img2img, SDEdit: Meng et al. 2022)
    sampler (DDIM / PLMS) with classifier-free guidance -> z_0
    image = D(z_0 / scale)

The functions take the model (StableDiffusion) as their first argument; StableDiffusion.txt2img and
.img2img call them.
"""

from __future__ import annotations

import secrets
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from samplers import guided, sample_ddim, sample_plms
from samplers.ddim import noise_to_step

if TYPE_CHECKING:
    from .pipeline import StableDiffusion

OUTPUTS = ("pil", "tensor", "latent")
SAMPLERS = ("ddim", "plms")


def prompts_for(prompt: str | Sequence[str], n: int) -> list[str]:
    """One prompt per image: a str is repeated n times; a list gives the batch (n must agree)."""
    if isinstance(prompt, str):
        prompts = [prompt] * n
    elif isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt) and prompt:
        if n not in (1, len(prompt)):
            raise ValueError(f"n={n} but {len(prompt)} prompts were given; give one prompt or n prompts")
        prompts = list(prompt)
    else:
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {type(prompt).__name__}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return prompts


def encode_prompts(sd: StableDiffusion, prompts: list[str], what: str = "prompt") -> torch.Tensor:
    """prompts -> context [B, 77, D]; warns with the words that did not fit the 77-token window."""
    for text in dict.fromkeys(prompts):
        dropped = sd.tokenizer.truncated_text(text)
        if dropped:
            warnings.warn(f"{what} is longer than {sd.tokenizer.context_length - 2} tokens; these words were "
                          f"dropped: {dropped!r}", stacklevel=3)
    tokens = sd.tokenizer(prompts).to(sd.device)
    return sd.text_encoder(tokens).to(sd.dtype)


def initial_noise(seeds: list[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """x_T: one N(0, I) draw of `shape` per seed, on the CPU so a seed means the same image anywhere."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def seeds_for(seed: int | None, count: int) -> list[int]:
    """Image i gets seed + i; no seed draws a random one (still printed/stored by the caller)."""
    if seed is None:
        seed = secrets.randbelow(2**32 - count)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return [seed + i for i in range(count)]


def check_choices(sampler: str, output: str, steps: int, guidance_scale: float, eta: float) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r} is not one of {OUTPUTS}")
    if not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"steps must be an int in 1..1000, got {steps!r}")
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    if eta < 0 or (sampler == "plms" and eta != 0):
        raise ValueError(f"eta={eta}: must be >= 0, and 0 for PLMS (it has no noise term)")


def run_sampler(sd: StableDiffusion, x: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                steps: int, sampler: str, guidance_scale: float, eta: float, generator: list[torch.Generator],
                callback: Callable | None, progress: bool, first_index: int | None = None) -> torch.Tensor:
    model = guided(lambda x_t, t, c: sd.unet(x_t, t, c), cond, uncond, guidance_scale)
    prediction = sd.config.prediction
    if sampler == "plms":
        return sample_plms(model, x, sd.schedule, steps, prediction, callback=callback, progress=progress)
    return sample_ddim(model, x, sd.schedule, steps, eta, prediction, first_index=first_index,
                       generator=generator, callback=callback, progress=progress)


def finish(sd: StableDiffusion, z: torch.Tensor, output: str):
    """z_0 (scaled latent) -> what `output` asks for."""
    if output == "latent":
        return z
    images = ((sd.vae.decode(z / sd.config.scale_factor).float() + 1) / 2).clamp(0, 1)
    if output == "tensor":
        return images
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


@torch.no_grad()
def txt2img(sd: StableDiffusion, prompt, negative_prompt="", steps=50, sampler="ddim", guidance_scale=7.5,
            eta=0.0, height=None, width=None, seed=None, n=1, x_T=None, output="pil", callback=None, progress=True):
    check_choices(sampler, output, steps, guidance_scale, eta)
    prompts = prompts_for(prompt, n)
    batch, f = len(prompts), sd.config.autoencoder.downsampling_factor
    seeds = seeds_for(seed, batch)
    if x_T is not None:
        expected = (batch, sd.config.latent_channels)
        if x_T.ndim != 4 or tuple(x_T.shape[:2]) != expected:
            raise ValueError(f"x_T must have shape [{batch}, {sd.config.latent_channels}, h, w], got {list(x_T.shape)}")
        height, width = x_T.shape[2] * f, x_T.shape[3] * f
    height = height or sd.config.image_size
    width = width or sd.config.image_size
    multiple = f * sd.unet.downsampling_factor
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        raise ValueError(f"height={height} and width={width} must be positive multiples of {multiple} "
                         f"(the latent, 1/{f} of the image, is halved {len(sd.config.unet.channel_mult) - 1} times)")
    if x_T is None:
        x_T = initial_noise(seeds, (sd.config.latent_channels, height // f, width // f))
    x_T = x_T.to(sd.device, sd.dtype)

    cond = encode_prompts(sd, prompts)
    uncond = encode_prompts(sd, [negative_prompt] * batch, "negative_prompt") if guidance_scale != 1.0 else None
    # eta > 0: each image's sampler noise from its own generator, after its x_T draw.
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for g in generators:
        torch.randn(x_T.shape[1:], generator=g)
    z = run_sampler(sd, x_T, cond, uncond, steps, sampler, guidance_scale, eta, generators, callback, progress)
    return finish(sd, z, output)


def image_to_tensor(image, multiple: int) -> torch.Tensor:
    """PIL image(s) or a [B, 3, H, W] tensor in [-1, 1] -> [B, 3, H', W'] with H', W' multiples of
    `multiple`: cropped at the bottom/right edge (a warning says so), never silently."""
    if isinstance(image, Image.Image):
        image = [image]
    if isinstance(image, (list, tuple)) and image and all(isinstance(i, Image.Image) for i in image):
        sizes = {i.size for i in image}
        if len(sizes) != 1:
            raise ValueError(f"all images must have the same size, got {sorted(sizes)}")
        array = np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 127.5 - 1 for i in image])
        # NHWC -> NCHW, made contiguous (a permuted view would send the convolutions down the
        # channels-last path: other kernels, other rounding).
        tensor = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    elif isinstance(image, torch.Tensor):
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image tensor must have shape [B, 3, H, W] in [-1, 1], got {list(image.shape)}")
        tensor = image.float()
    else:
        raise TypeError(f"image must be a PIL image, a list of them, or a [B, 3, H, W] tensor, got {type(image).__name__}")
    height, width = tensor.shape[2] // multiple * multiple, tensor.shape[3] // multiple * multiple
    if height == 0 or width == 0:
        raise ValueError(f"image of {tensor.shape[3]}x{tensor.shape[2]} is smaller than {multiple}x{multiple}")
    if (height, width) != tuple(tensor.shape[2:]):
        warnings.warn(f"image {tensor.shape[3]}x{tensor.shape[2]} cropped to {width}x{height} "
                      f"(a multiple of {multiple})", stacklevel=3)
        tensor = tensor[:, :, :height, :width]
    return tensor


@torch.no_grad()
def img2img(sd: StableDiffusion, image, prompt, strength=0.75, negative_prompt="", steps=50, sampler="ddim",
            guidance_scale=7.5, eta=0.0, seed=None, n=1, output="pil", callback=None, progress=True):
    check_choices(sampler, output, steps, guidance_scale, eta)
    if sampler != "ddim":
        raise ValueError("img2img runs DDIM only (as the original): it starts part-way down the DDIM schedule")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    f = sd.config.autoencoder.downsampling_factor
    images = image_to_tensor(image, f * sd.unet.downsampling_factor)
    prompts = prompts_for(prompt, n if images.shape[0] == 1 else images.shape[0])
    batch = len(prompts)
    if images.shape[0] not in (1, batch):
        raise ValueError(f"{images.shape[0]} images for {batch} prompts; give one image or one per prompt")
    images = images.expand(batch, -1, -1, -1).to(sd.device, sd.dtype)
    seeds = seeds_for(seed, batch)

    # Each image's own generator draws, in order: the posterior sample, the noise to step t_enc,
    # then (eta > 0) the sampler's noise.
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    posterior = sd.vae.encode(images)
    latent_shape = posterior.mean.shape[1:]
    eps = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(posterior.mean)
    # z_0 = scale * a sample of q(z | x) (the original's get_first_stage_encoding).
    z_0 = (posterior.mean + posterior.std * eps) * sd.config.scale_factor
    t_enc = int(strength * steps)  # the original's number of DDIM steps to run back
    if t_enc == 0:
        return finish(sd, z_0, output)  # nothing to denoise: the VAE round trip of the input
    noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators]).to(z_0)
    z_t = noise_to_step(z_0, noise, sd.schedule, steps, t_enc)

    cond = encode_prompts(sd, prompts)
    uncond = encode_prompts(sd, [negative_prompt] * batch, "negative_prompt") if guidance_scale != 1.0 else None
    z = run_sampler(sd, z_t, cond, uncond, steps, "ddim", guidance_scale, eta, generators, callback, progress,
                    first_index=t_enc)
    return finish(sd, z, output)
