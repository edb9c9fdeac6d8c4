"""The command line: `python -m ldm txt2img | img2img | convert | bench | train-demo`.

One file per command, each with `add_parser(commands)` (its flags) and `run(args)` (a short
function). txt2img/img2img take the flags of the original scripts/txt2img.py and
scripts/img2img.py (same names, same defaults), plus --negative-prompt, --sampler, --variant,
--device, --dtype; their flags are checked by the tasks' own checks before a model is loaded
(generation.py), and their images are written by ldm/outputs.py: OUTDIR/samples/00000.png, ...
and OUTDIR/grid-0000.png, counting past existing files, never overwriting one, each PNG with its
generation parameters in a `parameters` text chunk. A bad flag exits with code 2 and one line
that names it.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import bench, convert, img2img, train_demo, txt2img
from .common import UsageError

COMMANDS = {"txt2img": txt2img, "img2img": img2img, "bench": bench, "convert": convert, "train-demo": train_demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ldm",
                                     description="Stable Diffusion, written from scratch to be read and trusted.")
    parser.add_argument("--version", action="version", version=f"ldm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{txt2img,img2img,convert,bench,train-demo}")
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as error:
        print(f"python -m ldm {args.command}: error: {error}", file=sys.stderr)
        return 2
