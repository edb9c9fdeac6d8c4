"""The command line: `python -m ldm txt2img | img2img | inpaint | depth2img | upscale | convert | bench | watermark |
serve | train-demo`.

One file per command, each with `add_parser(commands)` (its flags) and `run(args)` (a short
function). txt2img/img2img take the flags of the original scripts/txt2img.py and
scripts/img2img.py (same names, same defaults), plus --negative-prompt, --sampler, --variant,
--device, --dtype; their flags are checked by the tasks' own checks before a model is loaded
(generation.py), and their images are written by ldm/outputs.py: OUTDIR/samples/00000.png, ...
and OUTDIR/grid-0000.png, counting past existing files, never overwriting one, each PNG with its
generation parameters in a `parameters` text chunk. A bad flag exits with code 2 and one line
that names it (an unknown one with the command's usage and the closest flag); a failure during
the run with code 1 and one line; Ctrl-C with code 130 and "interrupted after N image(s)".
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings

from .. import __version__
from . import bench, convert, depth2img, img2img, inpaint, serve, train_demo, txt2img, upscale, watermark
from .common import RunError, UsageError

COMMANDS = {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint, "depth2img": depth2img, "upscale": upscale,
            "bench": bench, "convert": convert, "watermark": watermark, "serve": serve, "train-demo": train_demo}
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ldm",
                                     description="Stable Diffusion, written from scratch to be read and trusted.")
    parser.add_argument("--version", action="version", version=f"ldm {__version__}")
    commands = parser.add_subparsers(dest="command",
                                     metavar="{txt2img,img2img,inpaint,depth2img,upscale,convert,bench,watermark,serve,"
                                             "train-demo}")
    for name, command in COMMANDS.items():
        command.add_parser(commands)
        subparser = commands.choices[name]
        if "--threads" not in subparser._option_string_actions:  # train-demo has its own (a training setting)
            subparser.add_argument("--threads", type=int,
                                   help="CPU threads for torch (default: torch's own choice, which honours "
                                        "OMP_NUM_THREADS); on a machine that is busy with other work, 1 is often "
                                        "much faster (docs/performance.md)")
        subparser.set_defaults(command_parser=subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help(sys.stderr)
        return 2
    if unknown:
        report_unknown(args.command_parser, unknown)
    warnings.showwarning = lambda message, *_, **__: print(f"python -m ldm {args.command}: warning: {message}",
                                                           file=sys.stderr)
    try:
        set_threads(args.threads)
        return COMMANDS[args.command].run(args)
    except UsageError as error:
        print(f"python -m ldm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RunError as error:
        print(f"python -m ldm {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        written = getattr(interrupt, "images_written", None)
        after = f" after {written} image(s)" if written is not None else ""
        print(f"python -m ldm {args.command}: interrupted{after}", file=sys.stderr)
        return INTERRUPTED


def report_unknown(command_parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit 2 with the command's own usage, naming the first unknown argument and the closest flag."""
    known = [flag for action in command_parser._actions for flag in action.option_strings]
    first = unknown[0].split("=", 1)[0]
    close = difflib.get_close_matches(first, known, n=1, cutoff=0.6) if first.startswith("-") else []
    hint = f"; did you mean {close[0]}?" if close else ""
    command_parser.error(f"unrecognized argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)}{hint}")


def set_threads(threads: int | None) -> None:
    """--threads N: torch's intra-op threads. Without it torch keeps its default, which is
    OMP_NUM_THREADS when set, else the number of cores."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads {threads}: must be >= 1")
    import torch

    torch.set_num_threads(threads)
