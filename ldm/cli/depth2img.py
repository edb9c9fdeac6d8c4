"""`python -m ldm depth2img`: the v2 repository's depth-to-image demo (scripts/gradio/depth2img.py) on
the command line, with img2img's flags: --init-img, --strength. The depth map MiDaS estimates is
written beside the samples (OUTDIR/depth-0000.png), as the demo shows it."""

from __future__ import annotations

import argparse

from ..outputs import save_depth
from ..tasks.depth2img import depth_image
from ..tasks.img2img import check_strength
from .common import flag_errors, load_model
from .generation import add_generation_flags, check_generation_flags, check_loaded_model
from .job import write_generations
from .img2img import read_init_image


def add_parser(commands) -> None:
    parser = commands.add_parser("depth2img", help="image to image keeping its depth (the depth model)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=9.0, n_iter=1, n_samples=1)
    parser.add_argument("--init-img", type=str, required=True, help="path to the input image")
    parser.add_argument("--strength", type=float, default=0.8,
                        help="0: keep the input, 1: only its depth (at 1.0 DDIM runs one step fewer, as the original)")


def run(args: argparse.Namespace) -> int:
    batches = check_generation_flags(args, starts_late=True)
    with flag_errors():
        check_strength(args.strength)
    image = read_init_image(args.init_img)
    sd = load_model(args)
    check_loaded_model(sd, "depth2img")
    with flag_errors():
        depth = sd.estimate_depth(image)  # once for the whole run

    def task(prompts, **common):
        return sd.depth2img(image, prompts, strength=args.strength, depth=depth, **common)

    return write_generations(args, sd, batches, task, on_start=lambda: save_depth(depth_image(depth)[0], args.outdir))
