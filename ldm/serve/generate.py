"""/txt2img and /img2img: an A1111 request, checked, run as a job on the library's tasks, and
answered as A1111 answers (images, parameters, info).

    plan(server, request)   in the HTTP handler: every check that needs no model (fields this
                            project does not have, limits, sampler names, seed, images) -> Plan
    run_plan(server, plan)  on the worker: the model, then n_iter batches of batch_size images,
                            image i of the run with seed + i (A1111's all_seeds), each marked and,
                            when save_images, written by the CLI's writer (ldm/outputs.py)

Which task runs is told by the loaded model and the request: a text-to-image model runs txt2img,
or img2img with init_images; an inpainting model runs inpaint (init_images and a mask); a depth
model, depth2img; the x4 upscaler, upscale (init_images; this project's own: A1111 upscales in its
extras only). img2img resizes the init image to width x height (A1111's resize_mode 0).
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from samplers import SAMPLERS, ddim_timesteps, options_of

from .. import __version__
from ..outputs import save_grid, save_sample
from ..tasks.common import ArgumentError, MAX_SEED, check_sampling, check_seed
from ..tasks.img2img import check_strength
from ..tasks.txt2img import check_size
from ..tasks.upscale import check_noise_level
from ..watermark import mark_for, put_watermark
from . import images, names
from .errors import Refused
from .jobs import Stopped
from .preview import preview
from .requests import Generation, Img2Img, refusals

# The library's argument -> the A1111 field that carries it.
FIELDS = {"steps": "steps", "guidance_scale": "cfg_scale", "eta": "eta", "seed": "seed", "height": "height",
          "width": "width", "strength": "denoising_strength", "n": "batch_size", "sampler": "sampler_name",
          "karras": "scheduler"}


@dataclass
class Plan:
    request: Generation
    sampler: names.A1111Sampler
    karras: bool
    eta: float | None
    seed: int
    checkpoint: object  # models.Checkpoint
    image: Image.Image | None = None
    mask: Image.Image | None = None

    @property
    def count(self) -> int:
        return plan_count(self.request)

    @property
    def about(self) -> str:
        """For the server's log: what the job makes."""
        r = self.request
        return (f"{self.count} image(s) {r.width}x{r.height}, seeds {self.seed}..{self.seed + self.count - 1}, "
                f"{self.sampler.label}{' Karras' if self.karras else ''}, {r.steps} steps, {self.checkpoint.name}")


def refused_argument(error: ArgumentError) -> Refused:
    return Refused(FIELDS.get(error.argument, error.argument), f"{error.value!r}: {error.problem}")


def plan(server, request: Generation) -> Plan:
    """The request checked before it is queued; Refused names the first field at fault."""
    refusals(request)
    limits = server.limits
    for name, most in (("batch_size", limits.batch_size), ("n_iter", limits.n_iter)):
        if not 1 <= getattr(request, name) <= most:
            raise Refused(name, f"{getattr(request, name)} is outside 1..{most}")
    for name in ("width", "height"):
        if not 1 <= getattr(request, name) <= limits.side:
            raise Refused(name, f"{getattr(request, name)} is outside 1..{limits.side} pixels")
    if request.width * request.height > limits.pixels:
        raise Refused("width", f"{request.width}x{request.height} is over this server's {limits.pixels} pixels")
    sampler, karras = names.resolve(request.sampler_name or request.sampler_index, request.scheduler)
    # A1111 passes eta to the samplers that add noise and ignores it for the others (webuiapi sends 1.0).
    eta = request.eta if "eta" in options_of(SAMPLERS[sampler.ours]) else None
    # -1: a random seed, as A1111's get_fixed_seed draws one, here so that seed + count - 1 fits in 32 bits.
    seed = request.seed if request.seed != -1 else random.randrange(MAX_SEED - plan_count(request) + 2)
    try:
        check_sampling(sampler=sampler.ours, steps=request.steps, guidance_scale=request.cfg_scale, eta=eta,
                       karras=karras, starts_late=isinstance(request, Img2Img) and request.mask is None)
        check_seed(seed, plan_count(request))
        if isinstance(request, Img2Img):
            check_strength(request.denoising_strength)
    except ArgumentError as error:
        raise refused_argument(error) from None
    result = Plan(request, sampler, karras, eta, seed, server.checkpoint_for(request.override_settings))
    if isinstance(request, Img2Img):
        read_images(server, request, result)
    if request.override_settings_restore_afterwards is False:  # the override stays the selected model
        server.selected = result.checkpoint
    return result


def plan_count(request: Generation) -> int:
    return request.batch_size * request.n_iter


def read_images(server, request: Img2Img, plan: Plan) -> None:
    """The init image resized to width x height (A1111's resize_mode 0, Lanczos), and the mask as
    A1111 prepares it for an inpainting model: rounded, inverted when asked, blurred by mask_blur
    (x and y), resized, then rounded again at half (its mask_round)."""
    if request.init_images is None:
        raise Refused("init_images", "Init image not found: img2img needs one image", status=404)
    if len(request.init_images) != 1:
        raise Refused("init_images", f"{len(request.init_images)} images; send exactly one (batch_size makes "
                                     "several results from it)")
    size = (request.width, request.height)
    image = images.decode(request.init_images[0], "init_images", server.limits.upload_pixels).convert("RGB")
    plan.image = image if image.size == size else image.resize(size, Image.LANCZOS)
    if request.mask is None:
        return
    if request.inpaint_full_res:
        raise Refused("inpaint_full_res", "true asks for 'Only masked' (inpainting a crop around the mask), which "
                                          "this project does not have; send false ('Whole picture')")
    if request.denoising_strength != 1:
        raise Refused("denoising_strength", f"{request.denoising_strength}: an inpainting model here repaints the "
                                            "masked part from pure noise, as the original inpainting scripts do; "
                                            "send 1.0")
    mask = images.decode(request.mask, "mask", server.limits.upload_pixels)
    mask = mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    if request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blur_x, blur_y = (request.mask_blur,) * 2 if request.mask_blur is not None else (request.mask_blur_x,
                                                                                    request.mask_blur_y)
    if min(blur_x, blur_y) < 0:
        raise Refused("mask_blur", f"{min(blur_x, blur_y)}: a blur radius is >= 0 pixels")
    if blur_x or blur_y:
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
    mask = mask if mask.size == size else mask.resize(size, Image.LANCZOS)
    plan.mask = mask.point(lambda v: 255 if v >= 128 else 0)


def run_plan(server, plan: Plan, run) -> dict:
    """The job: the images of every batch, then the A1111 response."""
    request = plan.request
    sd = server.model.get(plan.checkpoint)
    task, arguments, steps = choose_task(sd, plan)
    mark = None if server.no_watermark else mark_for(sd.config)
    made, unmarked, encoded = [], [], []
    for k in range(request.n_iter):
        callback = run.batch(k, steps, lambda pred_x0: preview(sd, pred_x0))
        try:
            batch = task(n=request.batch_size, seed=plan.seed + k * request.batch_size, callback=callback,
                         progress=False, **arguments)
        except Stopped:
            if run.interrupted:
                break
            continue  # /skip: on with the next batch
        except ArgumentError as error:
            raise refused_argument(error) from None
        except ValueError as error:  # what the tasks say of an image or mask (after the checks above)
            raise Refused("mask" if plan.mask is not None else "init_images", str(error)) from None
        for image in batch:
            marked = image if mark is None else put_watermark(image, mark)
            saved = save_sample(marked, server.outdir, marked.info["parameters"]) if request.save_images else None
            if request.send_images:  # the saved file's bytes, or the same PNG encoded here when none was saved
                encoded.append(base64.b64encode(saved.read_bytes()).decode("ascii") if saved else images.encode(marked))
            made.append(marked)
        unmarked += batch
    first = 0
    if request.save_images and len(made) > 1:  # A1111's return_grid: the grid first
        grid = save_grid(unmarked, server.outdir, request.batch_size, watermark=mark)
        if request.send_images:
            encoded.insert(0, base64.b64encode(grid.read_bytes()).decode("ascii"))
        first = 1
    return {"images": encoded, "parameters": echo(request),
            "info": json.dumps(info(server, plan, sd, made, first, run))}


def choose_task(sd, plan: Plan):
    """(task function, its arguments, the steps its sampler runs) for the loaded model."""
    request = plan.request
    common = dict(prompt=request.prompt or "", negative_prompt=request.negative_prompt or "", steps=request.steps,
                  sampler=plan.sampler.ours, guidance_scale=request.cfg_scale, eta=plan.eta, karras=plan.karras)
    kind = sd.config.task
    try:
        if kind != "upscale":  # the upscaler pads its input to the multiple it needs (the original's pad_image)
            check_size(sd, width=request.width, height=request.height)
    except ArgumentError as error:
        raise refused_argument(error) from None
    if kind == "upscale" and (plan.image is None or plan.mask is not None):
        raise Refused("sd_model_checkpoint", f"{sd.variant} is an upscaler: it upscales init_images in img2img "
                                             "(without a mask) or in /sdapi/v1/extra-single-image; load a "
                                             "text-to-image model for txt2img")
    if plan.mask is not None and kind != "inpaint":
        raise Refused("mask", f"the loaded model ({sd.variant}) is not an inpainting model, and masked img2img on "
                              "other models is not in this project; load an inpainting checkpoint")
    if plan.image is None:
        if kind != "txt2img":
            raise Refused("sd_model_checkpoint", f"the loaded model ({sd.variant}) is for {kind}: send init_images "
                                                 "(and a mask for inpainting) to /sdapi/v1/img2img")
        return sd.txt2img, dict(common, width=request.width, height=request.height), steps_run(sd, plan)
    if kind == "inpaint":
        if plan.mask is None:
            raise Refused("mask", f"the loaded model ({sd.variant}) is an inpainting model: send a mask (white: "
                                  "repaint)")
        return sd.inpaint, dict(common, image=plan.image, mask=plan.mask), steps_run(sd, plan)
    if kind == "upscale":  # x4: the init image at width x height gives an image 4 times as large
        try:
            check_noise_level(request.noise_level, sd.config.noise_augmentation.max_noise_level)
        except ArgumentError as error:
            raise refused_argument(error) from None
        return sd.upscale, dict(common, image=plan.image, noise_level=request.noise_level), steps_run(sd, plan)
    strength = request.denoising_strength
    task = sd.depth2img if kind == "depth2img" else sd.img2img
    return task, dict(common, image=plan.image, strength=strength), int(strength * request.steps)


def steps_run(sd, plan: Plan) -> int:
    """The steps the sampler takes from x_T: DDIM and PLMS walk the original's timesteps, which
    are more than asked when 1000 is not a multiple of steps (samplers/schedule.py)."""
    if plan.sampler.ours in ("ddim", "plms"):
        return len(ddim_timesteps(plan.request.steps, sd.schedule.num_timesteps))
    return plan.request.steps


def echo(request: Generation) -> dict:
    """A1111's `parameters`: the request as received, with its defaults; img2img's images left out
    unless include_init_images."""
    fields = request.model_dump()
    if isinstance(request, Img2Img) and not request.include_init_images:
        fields["init_images"] = fields["mask"] = None
    return fields


def info(server, plan: Plan, sd, made: list, first: int, run) -> dict:
    """A1111's Processed.js(), key for key, in its order."""
    request, count = plan.request, plan.count
    seeds = [plan.seed + i for i in range(count)]
    prompt, negative = request.prompt or "", request.negative_prompt or ""
    extra = {"Schedule type": "Karras"} if plan.karras else {}
    if isinstance(request, Img2Img):
        extra["Denoising strength"] = request.denoising_strength
    return {
        "prompt": prompt, "all_prompts": [prompt] * count, "negative_prompt": negative,
        "all_negative_prompts": [negative] * count, "seed": plan.seed, "all_seeds": seeds,
        "subseed": request.subseed, "all_subseeds": [request.subseed] * count, "subseed_strength": 0,
        "width": request.width, "height": request.height, "sampler_name": plan.sampler.label,
        "cfg_scale": request.cfg_scale, "steps": request.steps, "batch_size": request.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": plan.checkpoint.model_name,
        "sd_model_hash": sd.model_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength, "extra_generation_params": extra,
        "index_of_first_image": first, "infotexts": [image.info["parameters"] for image in made],
        "styles": [], "job_timestamp": run.job_timestamp, "clip_skip": 1,
        "is_using_inpainting_conditioning": sd.config.task == "inpaint", "version": f"ldm {__version__}",
    }
