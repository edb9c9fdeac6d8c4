"""What every task shares: checking its arguments, prompts -> context, seeds -> x_T, the run of a
named sampler with classifier-free guidance, and latent -> what the caller asked for.

A task is a function `task(sd, [image,] prompt, *, ...)` in a file of its own (txt2img.py,
img2img.py); StableDiffusion holds each as a method. Each checks its arguments first, with the
functions below, which raise ArgumentError naming the argument: the command line calls the same
checks before it loads a model, and reports the flag that carries the argument.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from samplers import SAMPLERS, default_of, guided, min_steps_of, options_of

from ..outputs import parameters_text
from ..precision import decode, dtype_of
from ..warn import warn
from .tiles import tiled

if TYPE_CHECKING:
    from ..pipeline import StableDiffusion

OUTPUTS = ("pil", "tensor", "latent")
QUOTED_WORDS = 20  # a warning quotes at most this many of the words it is about
# Seeds are 32-bit, as the original scripts' seed_everything and other tools' PNG "Seed:" fields.
MAX_SEED = 2**32 - 1
# What a model of another task takes besides the latent (the original's c_concat), for the message
# that refuses it (ModelConfig.task names the task).
EXTRA_INPUTS = {
    "inpaint": "the mask and the masked image's latent",
    "depth2img": "a MiDaS depth map",
    "upscale": "the low-resolution image",
}


class ArgumentError(ValueError):
    """A bad argument of a task: "name=value: problem". `argument` names it, so that the command
    line can name its own flag for it instead."""

    def __init__(self, argument: str, value, problem: str):
        super().__init__(f"{argument}={value!r}: {problem}")
        self.argument, self.value, self.problem = argument, value, problem


# -- checks, before any work ------------------------------------------------------------------------

# The model each task runs (ModelConfig.task), for the message that refuses another.
MODELS_FOR = {"txt2img": "txt2img", "img2img": "txt2img", "inpaint": "inpaint", "depth2img": "depth2img",
              "upscale": "upscale"}
MODEL_NAMES = {"txt2img": "a text-to-image model (v1, v2, v2-v or the demo model)",
               "inpaint": "an inpainting model (v1-inpainting, v2-inpainting)",
               "depth2img": "the depth model (v2-depth)", "upscale": "the x4 upscaler (x4-upscaler)"}


def check_model(sd: StableDiffusion, task: str) -> None:
    """Each task runs the models trained for it (txt2img and img2img: text-to-image models;
    inpaint: inpainting models); others are refused by name."""
    config, needed = sd.config, MODELS_FOR[task]
    if config.task != needed:
        takes = f"the latent and {EXTRA_INPUTS[config.task]}" if config.task in EXTRA_INPUTS else "the latent alone"
        raise ValueError(
            f"{task} cannot run the {config.name} model: its UNet takes {config.unet.in_channels} input channels "
            f"({takes}); it is a model for {config.task}. {task} needs {MODEL_NAMES[needed]}")


def check_sampling(*, sampler: str, steps: int, guidance_scale: float, eta: float | None, karras: bool = False,
                   starts_late: bool = False) -> None:
    """The sampler by name (samplers.SAMPLERS) and what it is asked to do. eta None: the sampler's
    own default. starts_late: the task starts part-way down the schedule (img2img), which needs a
    sampler that takes x_0 and t_enc."""
    if sampler not in SAMPLERS:
        raise ArgumentError("sampler", sampler, f"not one of {sorted(SAMPLERS)}")
    options = options_of(SAMPLERS[sampler])
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ArgumentError("steps", steps, "must be an int in 1..1000")
    least, why = min_steps_of(SAMPLERS[sampler])
    if steps < least and not starts_late:
        raise ArgumentError("steps", steps, why)
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ArgumentError("guidance_scale", guidance_scale, "must be a finite number >= 0")
    if eta is not None and (not math.isfinite(eta) or eta < 0):
        raise ArgumentError("eta", eta, "must be a finite number >= 0")
    if eta and "eta" not in options:
        raise ArgumentError("eta", eta, f"the {sampler} sampler adds no noise, so it has no eta; leave eta "
                                        f"unset (or 0), or use a sampler that takes it: {samplers_taking('eta')}")
    if not isinstance(karras, bool):
        raise ArgumentError("karras", karras, "must be True or False")
    if karras and "karras" not in options:
        raise ArgumentError("karras", karras, f"the {sampler} sampler does not walk a list of noise levels (sigmas), "
                                              "so Karras's spacing of them does not apply; samplers that take it: "
                                              f"{samplers_taking('karras')}")
    if starts_late and "t_enc" not in options:
        raise ArgumentError("sampler", sampler, "cannot start part-way down the schedule, as this task does; "
                                                f"samplers that can: {samplers_taking('t_enc')}")


def samplers_taking(option: str) -> list[str]:
    return sorted(name for name, sample in SAMPLERS.items() if option in options_of(sample))


def check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ArgumentError("output", output, f"not one of {OUTPUTS}")


def check_seed(seed: int | None, count: int = 1) -> None:
    """A seed for `count` images (they take seed, seed + 1, ...): all within 0..MAX_SEED."""
    if seed is None:
        return
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED - (count - 1):
        raise ArgumentError("seed", seed, f"must be an int in 0..{MAX_SEED - (count - 1)} (image i takes seed + i, "
                                          f"and seeds are 32-bit: at most {MAX_SEED}), or None for a random one")


# -- prompts, seeds, noise --------------------------------------------------------------------------

def prompts_for(prompt: str | Sequence[str], n: int) -> list[str]:
    """One prompt per image: a str is repeated n times; a list gives the batch (n must agree)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ArgumentError("n", n, "must be a positive int")
    if isinstance(prompt, str):
        return [prompt] * n
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt) and prompt:
        if n not in (1, len(prompt)):
            raise ArgumentError("n", n, f"{len(prompt)} prompts were given; give one prompt or n prompts")
        return list(prompt)
    raise TypeError(f"prompt must be a str or a non-empty list of str, got {type(prompt).__name__}")


def encode_prompts(sd: StableDiffusion, prompts: list[str], what: str = "prompt") -> torch.Tensor:
    """prompts -> context [B, 77, D]; warns with the words that did not fit the 77-token window
    (the first QUOTED_WORDS of them, and how many more)."""
    for text in dict.fromkeys(prompts):
        dropped, more = sd.tokenizer.dropped_words(text, QUOTED_WORDS)
        if dropped:
            warn(f"{what} is longer than {sd.tokenizer.context_length - 2} tokens; these words were dropped: "
                 f"{' '.join(dropped)!r}" + (f" and {more} more word(s)" if more else ""))
    tokens = sd.tokenizer(prompts).to(sd.device)
    return sd.text_encoder(tokens).to(sd.dtype)


def guidance_contexts(sd: StableDiffusion, prompts: list[str], negative_prompt: str, guidance_scale: float
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(c, the negative prompt's context for guidance); None when guidance_scale is 1 (no second pass)."""
    cond = encode_prompts(sd, prompts)
    if guidance_scale == 1.0:
        return cond, None
    return cond, encode_prompts(sd, [negative_prompt] * len(prompts), "negative_prompt")


def prompts_for_images(prompt: str | Sequence[str], n: int, images: int) -> list[str]:
    """The prompts of a task given `images` input images: n copies of one prompt for one image, else
    one per image (one image may serve every prompt of a list)."""
    prompts = prompts_for(prompt, n if images == 1 else images)
    if images not in (1, len(prompts)):
        raise ValueError(f"{images} images for {len(prompts)} prompts; give one image or one per prompt")
    return prompts


def posterior_sample(sd: StableDiffusion, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """z = scale_factor * a sample of q(z | image) (the original's get_first_stage_encoding), the
    noise of each image's sample the next draw of that image's own generator."""
    def moments(window: torch.Tensor) -> torch.Tensor:  # in the VAE's dtype, the sample in float32
        posterior = sd.vae.encode(window.to(dtype_of(sd.vae)))
        return torch.cat([posterior.mean.float(), posterior.std.float()], dim=1)

    # Whole, or in windows of sd.vae_tile latent pixels (memory.enable_vae_tiling), blended.
    mean, std = tiled(moments, images, sd.vae_tile, down=sd.config.autoencoder.downsampling_factor).chunk(2, dim=1)
    eps = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators]).to(mean)
    return (mean + std * eps) * sd.config.scale_factor


def seeds_for(seed: int | None, count: int) -> list[int]:
    """Image i gets seed + i; no seed draws a random one (still printed/stored by the caller)."""
    check_seed(seed, count)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1 - count)
    return [seed + i for i in range(count)]


def generators_for(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: everything random about image i comes from seed + i, in a
    fixed order, so an image never depends on its batch or on the device."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def initial_noise(seeds: list[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """x_T: one N(0, I) draw of `shape` per seed, on the CPU so a seed means the same image anywhere."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


# -- sampling and output ----------------------------------------------------------------------------

def run_sampler(sd: StableDiffusion, x_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, *,
                sampler: str, steps: int, guidance_scale: float, eta: float | None, karras: bool,
                generators: list[torch.Generator], callback: Callable | None, progress: bool,
                x_0: torch.Tensor | None = None, t_enc: int | None = None,
                concat: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                tile: int | None = None) -> torch.Tensor:
    """The named sampler over the guided UNet, from the unit-variance draw x_T (and img2img's x_0,
    t_enc). Options the sampler does not take (check_sampling has refused any value other than
    their default) are not passed, nor is eta None (the sampler's own default).

    concat [B, C', h, w]: what the UNet takes beside the latent (the original's c_concat, with
    conditioning_key "hybrid"), joined to x_t on the channels at every call, in both branches of
    guidance (the original's unconditional conditioning carries the same c_concat). class_labels
    [B]: the UNet's class label (the original's c_adm: the upscaler's noise level), likewise in both.
    tile: the UNet run on overlapping windows of that many latent pixels, their outputs blended at
    every step (tiles.py); None: whole."""
    def unet(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        copies = x_t.shape[0] // x_T.shape[0]  # 2 in guidance's batch [uncond, cond]
        if concat is not None:
            x_t = torch.cat([x_t, concat.repeat(copies, 1, 1, 1)], dim=1)
        labels = None if class_labels is None else class_labels.repeat(copies)
        # In the UNet's dtype, and back to float32 for the sampler (ldm/precision.py).
        return tiled(lambda window: sd.unet(window.to(sd.dtype), t, context, labels).float(), x_t, tile)

    model = guided(unet, cond, uncond, guidance_scale)
    sample = SAMPLERS[sampler]
    options = {"eta": eta, "generator": generators, "karras": karras, "x_0": x_0, "t_enc": t_enc}
    options = {name: value for name, value in options.items() if name in options_of(sample) and value is not None}
    return sample(model, x_T, sd.schedule, steps, prediction=sd.config.prediction, callback=callback,
                  progress=progress, **options)


def effective_eta(sampler: str, eta: float | None) -> float | None:
    """The eta a run used, for its parameters text: the one given, or the sampler's default; None
    for a sampler that adds no noise."""
    sample = SAMPLERS[sampler]
    if "eta" not in options_of(sample):
        return None
    return default_of(sample, "eta") if eta is None else eta


def finish(sd: StableDiffusion, z: torch.Tensor, output: str, *, prompts: list[str], seeds: list[int],
           crop: tuple[int, int] | None = None, tile: int | None = None, progress: bool = False, **fields):
    """z_0 (scaled latent) -> what `output` asks for: the latent itself, images [B, 3, H, W] in
    [0, 1] ("tensor"), or PIL images, each with its seed and its `parameters` text (the PNG chunk
    the command line writes, ldm/outputs.py) in `image.info`, so that an image made with
    seed=None can be reproduced and saved as the command line saves it. `fields`: the
    task's settings for parameters_text (negative_prompt, steps, sampler, ...). crop (height, width):
    the decoded images' top-left part to keep (a task that padded its input). tile: the decoder run
    on overlapping windows of that many latent pixels, blended (tiles.py), with a progress bar over
    them when `progress`; None: sd.vae_tile (memory.enable_vae_tiling; None there too: whole)."""
    if output == "latent":
        return z
    tile = sd.vae_tile if tile is None else tile
    decoded = tiled(lambda latent: decode(sd.vae, latent), z / sd.config.scale_factor, tile,
                    scale=sd.config.autoencoder.downsampling_factor, progress="VAE tiles" if progress else None)
    images = ((decoded + 1) / 2).clamp(0, 1)
    if crop is not None:
        images = images[:, :, : crop[0], : crop[1]]
    if output == "tensor":
        return images
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    pictures = [Image.fromarray(a) for a in arrays]
    for picture, prompt, seed in zip(pictures, prompts, seeds):
        picture.info["seed"] = seed
        picture.info["parameters"] = parameters_text(prompt, seed=seed, width=picture.width, height=picture.height,
                                                     model_hash=sd.model_hash, model=sd.model_name, **fields)
    return pictures


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
        warn(f"image {tensor.shape[3]}x{tensor.shape[2]} cropped to {width}x{height} (a multiple of {multiple})")
        tensor = tensor[:, :, :height, :width]
    return tensor
