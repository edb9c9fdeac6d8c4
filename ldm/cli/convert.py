"""`python -m ldm convert`: .ckpt <-> .safetensors, and an original file <-> a diffusers folder
(ldm/convert.py). What is written follows the output's name, or --to. A refused request exits 2,
a failure while writing (a full disk) 1, each with one line; nothing is left half-written."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import RunError, UsageError, resolve_ckpt


def add_parser(commands) -> None:
    # Each help says its default in words ("told by the output's name"): argparse's "(default: None)" would not.
    parser = commands.add_parser("convert", help="a checkpoint to .safetensors / .ckpt, to or from a diffusers folder")
    parser.add_argument("input", help="an original .ckpt/.safetensors file, a diffusers folder, or `demo` (the bundled "
                                      "demo model; ./demo for a file or folder of that name)")
    parser.add_argument("output", help="a .safetensors/.ckpt/.pt/.pth file (the original single-file layout) or a "
                                       "folder without an extension (diffusers); never overwritten")
    parser.add_argument("--variant", type=str, help="the model variant (default: detected)")
    parser.add_argument("--to", choices=["original", "diffusers"], help="the layout to write (default: told by the "
                                                                         "output's name)")
    parser.add_argument("--half", action="store_true", help="store float16 weights (without it a single file keeps "
                                                            "its dtypes; a diffusers folder is float32)")
    parser.add_argument("--ema", choices=["keep", "drop", "use"],
                        help="an original file's EMA weights (model_ema.*): keep them beside the training weights, "
                             "drop them, or use them as the UNet's (an ema-only file) (default: keep for a single "
                             "file, drop for a diffusers folder, which holds one UNet)")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert

    # `demo` is the bundled model, as for --ckpt (resolve_ckpt); write ./demo for a path of that name.
    source = resolve_ckpt("demo") if args.input == "demo" else Path(args.input)
    if not source.exists():
        raise UsageError(f"input {source}: no such file or folder")
    try:
        written = convert(source, Path(args.output), variant=args.variant, to=args.to, half=args.half, ema=args.ema)
    except KeyError as error:  # str() of a KeyError is the repr of its message: show the message
        raise UsageError(error.args[0] if error.args else repr(error)) from None
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise UsageError(str(error)) from None  # refused: a bad request, or an input that is no checkpoint
    except OSError as error:  # failed while writing: a full disk, no permission
        raise RunError(str(error)) from None
    print(written)
    return 0
