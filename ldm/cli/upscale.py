"""`python -m ldm upscale`: the v2 repository's x4 upscaler demo (scripts/gradio/superresolution.py)
on the command line, with txt2img's flags: --init-img (the low-resolution image), --noise_level."""

from __future__ import annotations

import argparse

from ..config import PRESETS
from ..tasks.upscale import check_noise_level, check_tile
from .common import flag_errors, load_model
from .generation import add_generation_flags, check_generation_flags, check_loaded_model
from .job import write_generations
from .img2img import read_init_image


def add_parser(commands) -> None:
    parser = commands.add_parser("upscale", help="4x an image (the x4 upscaler)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=9.0, n_iter=1, n_samples=1)
    parser.add_argument("--init-img", type=str, required=True, help="path to the low-resolution image")
    parser.add_argument("--noise_level", type=int, default=20,
                        help="noise added to the low-resolution image first (0..350; more: more invented detail)")
    parser.add_argument("--tile", type=tile_flag, default="auto",
                        help="side of the overlapping tiles the input is upscaled in (a multiple of 8), 'none' to "
                             "run it whole, 'auto' to tile only inputs of more than 256x256 pixels")


def tile_flag(value: str) -> int | str | None:
    """--tile's value: 'auto', 'none' or an int (checked against the model by the task)."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not 'auto', 'none' or a number of pixels") from None


def run(args: argparse.Namespace) -> int:
    batches = check_generation_flags(args)
    with flag_errors():
        check_noise_level(args.noise_level, PRESETS["x4-upscaler"].noise_augmentation.max_noise_level)
    image = read_init_image(args.init_img)
    sd = load_model(args)
    check_loaded_model(sd, "upscale")
    with flag_errors():
        check_tile(args.tile, sd.unet.downsampling_factor)

    def task(prompts, **common):
        return sd.upscale(image, prompts, noise_level=args.noise_level, tile=args.tile, **common)

    return write_generations(args, sd, batches, task)
