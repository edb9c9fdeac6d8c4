"""`python -m ldm watermark`: read the invisible watermark of images, or put one into an image
(ldm/watermark.py, the original scripts' dwtDct mark).

    python -m ldm watermark IMG...                 each image's mark (one of the known ones), or "no mark"
    python -m ldm watermark --length 4 IMG...      the 4 bytes each image's mark carries, whatever they are
    python -m ldm watermark --encode SDV2 IN OUT   IN with the mark, written to OUT (never over a file)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from ..outputs import save_new
from ..watermark import MARKS, describe, find_mark, fits, put_watermark, read_watermark
from .common import RunError, UsageError
from .img2img import read_init_image

LOSSY = {".jpg", ".jpeg", ".webp"}  # a format that rounds the mark away (docs/watermark.md)


def add_parser(commands) -> None:
    parser = commands.add_parser("watermark", help="read or put the original scripts' invisible watermark")
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="images to read; with --encode, the input image and the output path")
    parser.add_argument("--length", type=int,
                        help="print the mark of this many bytes each image carries (default: look for the known "
                             "marks, " + ", ".join(sorted({describe(m) for m in MARKS.values()})) + ")")
    parser.add_argument("--encode", type=str, metavar="BYTES",
                        help="put this mark (text, UTF-8) into the first image and write it to the second path")


def run(args: argparse.Namespace) -> int:
    if args.encode is not None:
        return encode(args)
    if args.length is not None and args.length < 1:
        raise UsageError(f"--length {args.length}: must be >= 1 (bytes)")
    for path in args.images:
        image = read_init_image(path, flag=None, mode=None)
        if not fits(*image.size):
            print(f"{path}: no mark ({image.width}x{image.height} is under the 256x256 pixels a mark needs)")
        elif args.length is not None:
            print(f"{path}: {describe(read_watermark(image, args.length))}")
        else:
            mark = find_mark(image)
            print(f"{path}: {describe(mark) if mark is not None else 'no mark'}")
    return 0


def encode(args: argparse.Namespace) -> int:
    if len(args.images) != 2:
        raise UsageError(f"--encode takes two paths, IN and OUT; got {len(args.images)}")
    if args.length is not None:
        raise UsageError("--length reads marks; --encode puts one: give one of them")
    mark, (source, target) = args.encode.encode("utf-8"), map(Path, args.images)
    if not mark:
        raise UsageError("--encode: the mark is empty; give at least one character")
    if target.exists():
        raise UsageError(f"{target}: already exists; give a new path (an image is never overwritten)")
    suffix = target.suffix.lower()
    if suffix not in Image.registered_extensions():
        raise UsageError(f"{target}: unknown image type {suffix!r}; give a .png path")
    if suffix in LOSSY:
        raise UsageError(f"{target}: {suffix} is lossy and rounds the mark away; give a .png path")
    image = read_init_image(source, flag=None, mode=None)
    if not fits(*image.size):
        raise UsageError(f"{source}: {image.width}x{image.height} is under the 256x256 pixels a mark needs")
    marked = put_watermark(image, mark)
    try:
        save_new(marked, target)
    except FileExistsError:  # one that appeared since the check above is still not replaced
        raise UsageError(f"{target}: already exists; give a new path (an image is never overwritten)") from None
    except OSError as error:
        raise RunError(f"{target}: {error.strerror or error}") from None
    print(target)
    return 0
