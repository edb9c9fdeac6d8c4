"""`python -m ldm ...`: the command line. One function per command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ldm",
        description="Stable Diffusion, written from scratch to be read and trusted.",
    )
    parser.add_argument("--version", action="version", version=f"ldm {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
