"""What the generation commands share on the command line: the original scripts' flags and the
checks made before a model is loaded (the tasks' own checks, run early). The run itself, which
writes OUTDIR/samples/NNNNN.png, the grid and the manifest, is job.py's."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from samplers import SAMPLERS

from ..tasks.common import check_model, check_sampling, check_seed, prompts_for
from .common import UsageError, add_model_flags, check_model_flags, flag_errors
from .job import run_plan

# A PNG of W x H pixels is at most about 3 W H bytes (RGB, compression never helps noise much): the
# room a run needs on the disk, checked before the model loads.
PNG_BYTES_PER_PIXEL = 3


def add_generation_flags(parser: argparse.ArgumentParser, scale: float, n_iter: int, n_samples: int) -> None:
    """The flags of the original scripts/txt2img.py and img2img.py (their names, their defaults)."""
    add = parser.add_argument
    add("--prompt", type=str, default="a painting of a virus monster playing guitar", help="the prompt to render")
    add("--negative-prompt", "--negative_prompt", type=str, default="",
        help="what to steer away from (classifier-free guidance)")
    add("--outdir", type=str, default="outputs", help="dir to write results to")
    add("--skip_grid", action="store_true", help="do not save a grid, only individual samples")
    add("--skip_save", action="store_true", help="do not save individual samples")
    add("--ddim_steps", "--steps", type=int, default=50, help="sampling steps (--steps: the v2 scripts' name)")
    add("--ddim_eta", "--eta", type=float, default=None,
        help="the noise the sampler adds each step (default: the sampler's own: 0 for DDIM, 1 for the ancestral and "
             "SDE samplers; samplers without noise take none)")
    add("--n_iter", type=int, default=n_iter, help="sample this often")
    add("--n_samples", type=int, default=n_samples, help="how many samples per prompt (the batch size)")
    add("--n_rows", type=int, default=0, help="images per row of the grid (default: n_samples), as the original")
    add("--scale", type=float, default=scale, help="classifier-free guidance scale")
    add("--from-file", type=str, help="read prompts from this file, one per line")
    add("--resume", action="store_true",
        help="finish the last run in --outdir, the one of its last manifest-NNNNN.jsonl: make only the images it has "
             "no line for (give the same flags; docs/scale.md)")
    add("--repeat", type=int, default=1, help="the v2 scripts' flag: each --from-file prompt this many times in a row")
    add("--torchscript", action="store_true", help="the v2 scripts' flag: refused (no TorchScript tracing here)")
    add("--ipex", action="store_true", help="the v2 scripts' flag: refused (no Intel Extension for PyTorch here)")
    add("--config", type=str, help="the original inference yaml (used to tell the variant)")
    add("--seed", type=int, default=42, help="the seed (image i of the run gets seed + i)")
    add("--precision", type=str, choices=["full", "autocast"], default="autocast",
        help="full: float32; autocast: float16 on CUDA, float32 elsewhere (--dtype wins)")
    add_model_flags(parser)
    add("--sampler", type=str, choices=sorted(SAMPLERS), default="ddim", help="the sampler (docs/math.md)")
    add("--karras", action="store_true", help="Karras et al.'s spacing of the noise levels (k-diffusion samplers)")
    add("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    add("--no_watermark", action="store_true",
        help="put no invisible watermark in the images (by default each sample and the grid carry the model family's "
             "mark, as the original scripts put it: docs/watermark.md)")


def check_generation_flags(args: argparse.Namespace, starts_late: bool = False) -> list[list[str]]:
    """Everything that can be checked before a model is loaded; UsageError names the flag. The
    sampling arguments go through the tasks' own checks (ldm/tasks/common.py). -> the prompt batches."""
    check_model_flags(args)
    for flag, text in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)):
        check_utf8(flag, text)
    check_v2_flags(args)
    if args.n_iter < 1:
        raise UsageError(f"--n_iter {args.n_iter}: must be >= 1")
    if args.n_rows < 0:
        raise UsageError(f"--n_rows {args.n_rows}: must be >= 0 (0: --n_samples images per row of the grid)")
    if args.from_file and not Path(args.from_file).is_file():
        problem = "not a regular file" if Path(args.from_file).exists() else "no such file"
        raise UsageError(f"--from-file {args.from_file}: {problem}")
    with flag_errors():
        prompts_for(args.prompt, args.n_samples)
        check_sampling(sampler=args.sampler, steps=args.ddim_steps, guidance_scale=args.scale, eta=args.ddim_eta,
                       karras=args.karras, starts_late=starts_late)
    batches = prompt_batches(args)
    seeds_used = max(batch.first_seed + len(batch.prompts) for batch in run_plan(args, batches)) - args.seed
    with flag_errors():
        check_seed(args.seed, seeds_used)
    # Each sample, and for the grid an unmarked copy of each (job.py) and the grid itself.
    images = seeds_used * (not args.skip_save) + (2 * seeds_used if not args.skip_grid else 0)
    check_outdir(Path(args.outdir), images, (getattr(args, "H", None) or 512) * (getattr(args, "W", None) or 512))
    return batches


def check_v2_flags(args: argparse.Namespace) -> None:
    """The v2 scripts' flags this project does not take, refused rather than ignored; --repeat's range."""
    if args.torchscript:
        raise UsageError("--torchscript: not supported: the v2 script traces the UNet and text encoder with torch.jit "
                         "for Intel's extension; here the modules run as written (torch.compile did not pay on the "
                         "CPU: docs/performance.md)")
    if args.ipex:
        raise UsageError("--ipex: not supported: Intel Extension for PyTorch is not a dependency of this project; "
                         "--bf16 runs bfloat16 with plain torch (fast where the CPU has AMX or AVX512-BF16)")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be >= 1")
    if args.repeat > 1 and not args.from_file:
        raise UsageError(f"--repeat {args.repeat}: repeats the prompts of --from-file (as the v2 scripts' flag); "
                         "for more images of --prompt use --n_samples or --n_iter")


def check_utf8(flag: str, text: str) -> None:
    """Text from the command line that is not UTF-8 arrives with its bad bytes as lone surrogates
    (Python's surrogateescape): refuse it now, not when the PNG's text chunk is written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(text[error.start]) - 0xDC00
        raise UsageError(f"{flag}: not valid UTF-8 (byte 0x{byte & 0xFF:02x} at character {error.start}); "
                         "set the terminal's encoding to UTF-8 or use --from-file with a UTF-8 file") from None


def check_outdir(outdir: Path, images: int, pixels: int) -> None:
    """Before the model loads, leaving nothing behind: OUTDIR/samples can be made and written in
    (a probe folder is made and removed in the deepest part that exists), and the disk has room
    for `images` PNGs of `pixels` pixels each."""
    existing = outdir / "samples"
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--outdir {outdir}: a file is in the way ({existing}); give a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".ldm-probe-"))
    except OSError as error:
        raise UsageError(f"--outdir {outdir}: cannot write there ({error.strerror or error})") from None
    needed, free = images * pixels * PNG_BYTES_PER_PIXEL, shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(f"--outdir {outdir}: {free / 2**20:.1f} MiB free, but this run may write up to "
                         f"{needed / 2**20:.1f} MiB ({images} PNGs); free some space or choose another --outdir")


def check_loaded_model(sd, task: str, **sizes: int | None) -> None:
    """What needs the model, before anything is written: the task serves this variant, and the
    sizes given are multiples the model can take (the tasks' own checks)."""
    from ..tasks.txt2img import check_size

    with flag_errors():
        check_model(sd, task)
        check_size(sd, **{name: value for name, value in sizes.items() if value is not None})


def prompt_batches(args: argparse.Namespace) -> list[list[str]]:
    """The original's batching: one prompt repeated n_samples times, or the file's lines (each
    --repeat times) in chunks of n_samples."""
    if not args.from_file:
        return [[args.prompt] * args.n_samples]
    try:
        text = Path(args.from_file).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--from-file {args.from_file}: not UTF-8 text (byte 0x{error.object[error.start]:02x} "
                         f"at offset {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise UsageError(f"--from-file {args.from_file}: {error.strerror or error}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"--from-file {args.from_file}: the file holds no prompts")
    lines = [line for line in lines for _ in range(args.repeat)]  # the v2 scripts' --repeat: a, a, b, b, ...
    return [lines[i : i + args.n_samples] for i in range(0, len(lines), args.n_samples)]
