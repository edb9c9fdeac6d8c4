"""`python -m ldm img2img`: the original scripts/img2img.py."""

from __future__ import annotations

import argparse

from PIL import Image

from ..tasks.img2img import check_strength
from .common import UsageError, flag_errors, load_model
from .generation import (add_generation_flags, check_generation_flags, check_loaded_model,
                         write_generations)


def add_parser(commands) -> None:
    parser = commands.add_parser("img2img", help="image to image (scripts/img2img.py)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=5.0, n_iter=1, n_samples=2)
    parser.add_argument("--init-img", type=str, required=True, help="path to the input image")
    parser.add_argument("--strength", type=float, default=0.75, help="0: keep the input, 1: ignore it (noise strength)")


def run(args: argparse.Namespace) -> int:
    batches = check_generation_flags(args, starts_late=True)
    with flag_errors():
        check_strength(args.strength)
    try:
        with Image.open(args.init_img) as image:
            image.verify()
    except (OSError, ValueError) as error:
        raise UsageError(f"--init-img {args.init_img}: not a readable image ({error})") from None
    sd = load_model(args)
    check_loaded_model(sd, "img2img")
    init = Image.open(args.init_img).convert("RGB")

    def task(prompts, **common):
        return sd.img2img(init, prompts, strength=args.strength, **common)

    return write_generations(args, batches, task, strength=args.strength)
