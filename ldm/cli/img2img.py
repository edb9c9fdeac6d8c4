"""`python -m ldm img2img`: the original scripts/img2img.py."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from PIL import Image

from ..tasks.img2img import check_strength
from .common import UsageError, flag_errors, load_model
from .generation import add_generation_flags, check_generation_flags, check_loaded_model
from .job import write_generations


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
    init = read_init_image(args.init_img)
    sd = load_model(args)
    check_loaded_model(sd, "img2img")

    def task(prompts, **common):
        return sd.img2img(init, prompts, strength=args.strength, **common)

    return write_generations(args, sd, batches, task)


def read_init_image(path: str, flag: str | None = "--init-img", mode: str | None = "RGB") -> Image.Image:
    """An input image (--init-img, --mask), decoded whole before the model loads: a regular file, a
    readable image, no more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS).
    mode: converted to it (None: kept as it is, for a mask whose transparency matters). flag: what
    the message names before the path (None: the path alone, for a positional argument)."""
    label = f"{flag} {path}" if flag else str(path)
    if not Path(path).is_file():
        raise UsageError(f"{label}: " + ("not a regular file" if Path(path).exists() else "no such file"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.convert(mode) if mode else image.copy()
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, zlib errors...
        raise UsageError(f"{label}: not a readable image ({type(error).__name__}: "
                         f"{str(error)[:200]!r})") from None
