"""/sdapi/v1/extra-single-image: A1111's "Extras" tab, its upscaler part.

Upscalers: A1111's built-in "None" (the image as it is, in RGB), "Lanczos" and "Nearest" (PIL
resizes), and "SD x4 upscaler" (the x4 upscaler model, ldm/tasks/upscale.py, with the settings of
the original's demo: 50 DDIM steps, guidance 9, noise level 20, an empty prompt), listed while an
x4-upscaler checkpoint is the loaded model. A scale other than the upscaler's own is reached as
A1111 reaches it: the upscaled image resized (Lanczos) to `upscaling_resize` times the input.
Face restoration and a second upscaler are refused.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from PIL import Image

from ..tasks.common import ArgumentError
from ..watermark import mark_for, put_watermark
from . import images
from .errors import Refused
from .jobs import Stopped

SD_X4 = "SD x4 upscaler"
RESIZES = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}


class ExtrasSingleImage(BaseModel):
    """A1111's ExtrasSingleImageRequest, its fields and defaults."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False
    image: str = ""


def upscalers(sd) -> list[dict]:
    """GET /sdapi/v1/upscalers."""
    builtin = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
               for name in ("None", *RESIZES)]
    if sd is not None and sd.config.task == "upscale":
        source = None if sd.source is None else str(sd.source)
        builtin.append({"name": SD_X4, "model_name": sd.model_name, "model_path": source, "model_url": None,
                        "scale": 4})
    return builtin


def check(server, request: ExtrasSingleImage) -> Image.Image:
    """The request checked before it is queued -> the input image."""
    for name, what in (("gfpgan_visibility", "GFPGAN face restoration"), ("codeformer_visibility", "CodeFormer face "
                       "restoration"), ("extras_upscaler_2_visibility", "a second upscaler")):
        if getattr(request, name):
            raise Refused(name, f"{getattr(request, name)} asks for {what}, which this project does not have; send 0")
    if request.resize_mode != 0:
        raise Refused("resize_mode", f"{request.resize_mode}: only 0 (upscale by upscaling_resize) is here")
    if not 0 < request.upscaling_resize <= 8:
        raise Refused("upscaling_resize", f"{request.upscaling_resize} is outside (0, 8]")
    image = images.decode(request.image, "image", server.limits.upload_pixels).convert("RGB")
    target = round(image.width * request.upscaling_resize) * round(image.height * request.upscaling_resize)
    if target > server.limits.pixels:
        raise Refused("upscaling_resize", f"the result would have {target} pixels, over this server's "
                                          f"{server.limits.pixels}")
    if request.upscaler_1 not in ("None", SD_X4, *RESIZES):
        raise Refused("upscaler_1", f"no upscaler {request.upscaler_1!r}; upscalers here: None, Lanczos, Nearest, "
                                    f"{SD_X4} (with an x4-upscaler checkpoint loaded)")
    return image


def upscale(server, request: ExtrasSingleImage, image: Image.Image, run) -> dict:
    """The job: -> {"html_info", "image"} as A1111 answers."""
    size = (round(image.width * request.upscaling_resize), round(image.height * request.upscaling_resize))
    name = request.upscaler_1
    if name == "None":
        return {"html_info": "<p></p>", "image": images.encode(image)}
    if name in RESIZES:
        result = image.resize(size, RESIZES[name])
    else:
        sd = server.model.get(server.selected)
        if sd.config.task != "upscale":
            raise Refused("upscaler_1", f"{SD_X4} needs an x4-upscaler checkpoint as the loaded model (POST "
                                        f"/sdapi/v1/options sd_model_checkpoint); the loaded one is {sd.variant}")
        steps = 50
        try:
            result = sd.upscale(image, "", noise_level=20, steps=steps, sampler="ddim", guidance_scale=9.0, seed=0,
                                callback=run.batch(0, steps, None), progress=False)[0]
        except ArgumentError as error:
            raise Refused("image", f"{error.value!r}: {error.problem}") from None
        except Stopped:
            raise Refused("upscaler_1", "interrupted (POST /sdapi/v1/interrupt) before the upscale finished",
                          status=409) from None
        if result.size != size:
            info, result = result.info, result.resize(size, Image.LANCZOS)
            result.info.update(info)
        if not server.no_watermark:
            result = put_watermark(result, mark_for(sd.config))
    by = f"{request.upscaling_resize:g}"
    return {"html_info": f"<p>Postprocess upscale by: {by}, Postprocess upscaler: {name}</p>",
            "image": images.encode(result)}
