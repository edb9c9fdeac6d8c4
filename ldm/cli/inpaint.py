"""`python -m ldm inpaint`: the v2 repository's inpainting demo (scripts/gradio/inpainting.py) on the
command line, with txt2img's flags: --init-img and --mask (white = repaint), of the same size."""

from __future__ import annotations

import argparse

from ..tasks.inpaint import mask_to_tensor
from .common import UsageError, load_model
from .generation import add_generation_flags, check_generation_flags, check_loaded_model
from .job import write_generations
from .img2img import read_init_image


def add_parser(commands) -> None:
    parser = commands.add_parser("inpaint", help="repaint the masked part of an image (an inpainting model)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=7.5, n_iter=1, n_samples=1)
    parser.add_argument("--init-img", type=str, required=True, help="path to the image")
    parser.add_argument("--mask", type=str, required=True,
                        help="path to the mask, the image's size: white = repaint, black = keep")


def run(args: argparse.Namespace) -> int:
    batches = check_generation_flags(args)
    image = read_init_image(args.init_img)
    mask = read_init_image(args.mask, flag="--mask", mode=None)
    try:
        mask_to_tensor(mask, (image.height, image.width))  # before the model loads
    except ValueError as error:
        raise UsageError(f"--mask {args.mask}: {error}") from None
    sd = load_model(args)
    check_loaded_model(sd, "inpaint")

    def task(prompts, **common):
        return sd.inpaint(image, mask, prompts, **common)

    return write_generations(args, sd, batches, task)

