"""`python -m ldm convert`: an original single file <-> a diffusers folder (ldm/convert.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError


def add_parser(commands) -> None:
    parser = commands.add_parser("convert", help="original single file <-> diffusers folder",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input", help="an original .ckpt/.safetensors file or a diffusers folder")
    parser.add_argument("output", help="the file or folder to write (never overwritten)")
    parser.add_argument("--variant", type=str, help="the model variant (default: detected)")
    parser.add_argument("--to", choices=["original", "diffusers"], help="default: the other layout")
    parser.add_argument("--half", action="store_true", help="store float16 weights")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert

    source = Path(args.input)
    if not source.exists():
        raise UsageError(f"input {source}: no such file or folder")
    to = args.to or ("original" if source.is_dir() else "diffusers")
    try:
        written = convert(source, Path(args.output), variant=args.variant, to=to, half=args.half)
    except (FileExistsError, ValueError, KeyError) as error:
        raise UsageError(str(error)) from None
    print(written)
    return 0
