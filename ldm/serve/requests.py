"""The request bodies of /sdapi/v1/txt2img and /img2img, field for field as AUTOMATIC1111 1.10
declares them (modules/api/models.py builds them from its processing classes' fields: same names,
same defaults), and the fields that ask for something this project does not have.

Pydantic checks the types (a wrong type: FastAPI's own 422, as in A1111) and ignores unknown keys
(as A1111 does). A1111 declares every field Optional; here the numbers a run needs (seed, steps,
sizes, ...) are not, so that a null is a 422 rather than a failure in the middle of the job.
A field this project cannot honour is accepted at its A1111 default and refused otherwise
(Refused, HTTP 422 naming it), never silently ignored: `refusals()`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import Refused


class Generation(BaseModel):
    """StableDiffusionProcessing's fields, and the API's own (sampler_index ... infotext)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list | None = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = {}
    force_task_id: str | None = None
    infotext: str | None = None


class Txt2Img(Generation):
    """StableDiffusionProcessingTxt2Img's own fields: the hires fix (refused unless off)."""

    enable_hr: bool | None = False
    denoising_strength: float | None = 0.75
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2Img(Generation):
    """StableDiffusionProcessingImg2Img's own fields."""

    init_images: list[str] | None = None
    resize_mode: int | None = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
    # This project's own (not A1111's): with an x4-upscaler model loaded, img2img upscales the init
    # image, its low-resolution copy noised to this level first (0..350, the upscaler's noise_level).
    noise_level: int = 20


# field -> (the values that ask for nothing, what another value would ask for). None is A1111's
# "take the setting", whose value here asks for nothing.
NOT_HERE = {
    "styles": ((None, []), "prompt styles"),
    "subseed_strength": ((0, None), "variation seeds"),
    "seed_resize_from_h": ((-1, 0, None), "resizing the seed's noise"),
    "seed_resize_from_w": ((-1, 0, None), "resizing the seed's noise"),
    "restore_faces": ((None, False), "face restoration"),
    "tiling": ((None, False), "tiling (seamless textures)"),
    "s_min_uncond": ((None, 0), "skipping the negative prompt at low sigmas"),
    "s_churn": ((None, 0), "Karras's churn"),
    "s_tmax": ((None, 0), "Karras's churn"),
    "s_tmin": ((None, 0), "Karras's churn"),
    "s_noise": ((None, 1), "a noise multiplier"),
    "refiner_checkpoint": ((None, ""), "a refiner model (SDXL)"),
    "firstpass_image": ((None, ""), "the hires fix"),
    "script_name": ((None, ""), "scripts"),
    "script_args": ((None, []), "scripts"),
    "alwayson_scripts": ((None, {}), "scripts (extensions)"),
    "infotext": ((None, ""), "filling fields from an infotext"),
    "enable_hr": ((None, False), "the hires fix"),
    "resize_mode": ((None, 0), "resize modes other than 0 (just resize)"),
    "mask_round": ((None, True), "an unrounded (soft) mask"),
    "initial_noise_multiplier": ((None, 1), "an initial noise multiplier"),
    "latent_mask": ((None, ""), "a separate latent mask"),
}
EXTRA_NETWORK = ("<lora:", "<lyco:", "<hypernet:")


def refusals(request: Generation) -> None:
    """Refused for the first field that asks for something this project does not have."""
    for name, (defaults, what) in NOT_HERE.items():
        if name in type(request).model_fields and getattr(request, name) not in defaults:
            shown = next(d for d in defaults if d is not None)
            raise Refused(name, f"{getattr(request, name)!r} asks for {what}, which this project does not have; "
                                f"leave it out (or send {shown!r})")
    for name in ("prompt", "negative_prompt"):
        text = (getattr(request, name) or "").lower()
        if any(tag in text for tag in EXTRA_NETWORK) and not request.disable_extra_networks:
            raise Refused(name, "LoRA / hypernetwork tags (<lora:...>) ask for extra networks, which this project "
                                "does not have; remove them (or set disable_extra_networks to read them as text)")
