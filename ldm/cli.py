"""The command line: `python -m ldm txt2img | img2img | convert`, with the original scripts' flags.

txt2img/img2img take the flags of the original scripts/txt2img.py and scripts/img2img.py (same
names, same defaults), plus --negative-prompt, --sampler, --variant, --device, --dtype. Output
goes where the original puts it: OUTDIR/samples/00000.png, ... and OUTDIR/grid-0000.png, counting
past existing files, never overwriting one. Every PNG carries its generation parameters in a
`parameters` text chunk. A bad flag exits with code 2 and one line that names it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from . import __version__
from .demo.train import TrainingConfig


class UsageError(Exception):
    """A bad flag: printed as one line, exit code 2."""


def add_common_flags(parser: argparse.ArgumentParser, scale: float, n_iter: int, n_samples: int) -> None:
    add = parser.add_argument
    add("--prompt", type=str, default="a painting of a virus monster playing guitar", help="the prompt to render")
    add("--negative-prompt", type=str, default="", help="what to steer away from (classifier-free guidance)")
    add("--outdir", type=str, default="outputs", help="dir to write results to")
    add("--skip_grid", action="store_true", help="do not save a grid, only individual samples")
    add("--skip_save", action="store_true", help="do not save individual samples")
    add("--ddim_steps", type=int, default=50, help="number of sampling steps")
    add("--ddim_eta", type=float, default=0.0, help="DDIM eta (eta=0.0 is deterministic)")
    add("--n_iter", type=int, default=n_iter, help="sample this often")
    add("--n_samples", type=int, default=n_samples, help="how many samples per prompt (the batch size)")
    add("--n_rows", type=int, default=0, help="images per row of the grid (default: n_samples), as the original")
    add("--scale", type=float, default=scale, help="classifier-free guidance scale")
    add("--from-file", type=str, help="read prompts from this file, one per line")
    add("--config", type=str, help="the original inference yaml (used to tell the variant)")
    add("--ckpt", type=str, help="path to the checkpoint (.ckpt or .safetensors; default: the bundled demo model)")
    add("--seed", type=int, default=42, help="the seed (image i of the run gets seed + i)")
    add("--precision", type=str, choices=["full", "autocast"], default="autocast",
        help="full: float32; autocast: float16 on CUDA, float32 elsewhere (--dtype wins)")
    add("--variant", type=str, help="the model variant (default: detected)")
    add("--device", type=str, help="cpu, cuda, mps (default: cuda, then mps, then cpu)")
    add("--dtype", type=str, choices=["float32", "float16", "bfloat16"], help="weights and activations dtype")
    add("--sampler", type=str, choices=["ddim", "plms"], default="ddim", help="the sampler")
    add("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ldm",
                                     description="Stable Diffusion, written from scratch to be read and trusted.")
    parser.add_argument("--version", action="version", version=f"ldm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{txt2img,img2img,convert,bench,train-demo}")

    txt2img = commands.add_parser("txt2img", help="text to image (scripts/txt2img.py)")
    add_common_flags(txt2img, scale=7.5, n_iter=2, n_samples=3)
    txt2img.add_argument("--plms", action="store_true", help="use PLMS sampling (same as --sampler plms)")
    txt2img.add_argument("--fixed_code", action="store_true", help="the same starting noise for every iteration")
    txt2img.add_argument("--H", type=int, help="image height in pixels (default: the model's size)")
    txt2img.add_argument("--W", type=int, help="image width in pixels (default: the model's size)")
    txt2img.add_argument("--C", type=int, help="latent channels (checked against the model)")
    txt2img.add_argument("--f", type=int, help="downsampling factor (checked against the model)")

    img2img = commands.add_parser("img2img", help="image to image (scripts/img2img.py)")
    add_common_flags(img2img, scale=5.0, n_iter=1, n_samples=2)
    img2img.add_argument("--init-img", type=str, required=True, help="path to the input image")
    img2img.add_argument("--strength", type=float, default=0.75,
                         help="0: keep the input, 1: ignore it (noise strength)")

    bench = commands.add_parser("bench", help="time each stage of txt2img on this machine")
    bench.add_argument("--ckpt", type=str, help="path to the checkpoint (default: the bundled demo model)")
    bench.add_argument("--variant", type=str, help="the model variant (default: detected)")
    bench.add_argument("--device", type=str, help="cpu, cuda, mps (default: cuda, then mps, then cpu)")
    bench.add_argument("--dtype", type=str, choices=["float32", "float16", "bfloat16"])
    bench.add_argument("--H", type=int, help="image height (default: the model's size)")
    bench.add_argument("--W", type=int, help="image width (default: the model's size)")
    bench.add_argument("--n_samples", type=int, default=1, help="batch size")
    bench.add_argument("--ddim_steps", type=int, default=10, help="sampling steps to time")
    bench.add_argument("--scale", type=float, default=7.5, help="guidance scale (1 halves the UNet batch)")

    convert = commands.add_parser("convert", help="original single file <-> diffusers folder")
    convert.add_argument("input", help="an original .ckpt/.safetensors file or a diffusers folder")
    convert.add_argument("output", help="the file or folder to write (never overwritten)")
    convert.add_argument("--variant", type=str, help="the model variant (default: detected)")
    convert.add_argument("--to", choices=["original", "diffusers"], help="default: the other layout")
    convert.add_argument("--half", action="store_true", help="store float16 weights")

    train = commands.add_parser("train-demo", help="train the small demo model on the shapes dataset")
    defaults = TrainingConfig()
    train.add_argument("--out", type=str, default="demo-model.safetensors",
                       help="the .safetensors file to write (never overwritten)")
    train.add_argument("--minutes", type=float, help="wall-time cap: stop each stage early when reached")
    train.add_argument("--seed", type=int, default=defaults.seed, help="the seed of weights, data and noise")
    train.add_argument("--autoencoder-steps", type=int, default=defaults.autoencoder_steps)
    train.add_argument("--denoiser-steps", type=int, default=defaults.denoiser_steps,
                       help="steps of the text encoder + UNet stage")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    return parser


def check_generation_flags(args: argparse.Namespace) -> None:
    """Everything that can be checked before a model is loaded; UsageError names the flag."""
    check_checkpoint_flag(args)
    if not 1 <= args.ddim_steps <= 1000:
        raise UsageError(f"--ddim_steps {args.ddim_steps}: must be between 1 and 1000")
    if args.scale < 0:
        raise UsageError(f"--scale {args.scale}: must be >= 0")
    if args.ddim_eta < 0:
        raise UsageError(f"--ddim_eta {args.ddim_eta}: must be >= 0")
    if args.n_samples < 1 or args.n_iter < 1:
        raise UsageError(f"--n_samples {args.n_samples} / --n_iter {args.n_iter}: must be >= 1")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    if args.from_file and not Path(args.from_file).is_file():
        raise UsageError(f"--from-file {args.from_file}: no such file")
    if getattr(args, "plms", False):
        args.sampler = "plms"
    if args.sampler == "plms" and args.ddim_eta != 0:
        raise UsageError(f"--ddim_eta {args.ddim_eta}: PLMS has no noise term; use eta 0 or --sampler ddim")
    for flag in ("H", "W"):
        value = getattr(args, flag, None)
        if value is not None and (value <= 0 or value % 8):
            raise UsageError(f"--{flag} {value}: must be a positive multiple of 8")
    if getattr(args, "strength", None) is not None and not 0.0 <= args.strength <= 1.0:
        raise UsageError(f"--strength {args.strength}: must be between 0 and 1")
    if getattr(args, "init_img", None) is not None:
        try:
            with Image.open(args.init_img) as image:
                image.verify()
        except (OSError, ValueError) as error:
            raise UsageError(f"--init-img {args.init_img}: not a readable image ({error})") from None
    device = torch.device(args.device) if args.device else None
    if args.dtype == "float16" and (device or _default_device()).type == "cpu":
        raise UsageError("--dtype float16: not supported on the CPU; use float32 or bfloat16 there")


def check_checkpoint_flag(args: argparse.Namespace) -> None:
    """--ckpt must name a file; no --ckpt: the demo model shipped with the package."""
    if args.ckpt is None:
        from .demo import CHECKPOINT

        if not CHECKPOINT.is_file():
            raise UsageError(f"no --ckpt given and the bundled demo model {CHECKPOINT} is missing "
                             "(re-install the package, or pass --ckpt)")
        args.ckpt = str(CHECKPOINT)
    if not Path(args.ckpt).is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such checkpoint file")


def _default_device() -> torch.device:
    from .pipeline import default_device

    return default_device()


def load_model(args: argparse.Namespace):
    from checkpoints_convert.detect import variant_from_yaml

    from .pipeline import StableDiffusion, default_device

    variant = args.variant
    if variant is None and args.config:
        found = variant_from_yaml(Path(args.config))
        if found is None:
            raise UsageError(f"--config {args.config}: the yaml does not tell the variant; pass --variant")
        variant = found[0]
    device = torch.device(args.device) if args.device else default_device()
    dtype = args.dtype or ("float16" if args.precision == "autocast" and device.type == "cuda" else "float32")
    try:
        return StableDiffusion.from_checkpoint(args.ckpt, variant=variant, device=device, dtype=dtype)
    except (ValueError, KeyError, OSError) as error:
        raise UsageError(f"--ckpt {args.ckpt}: {error}") from None


def file_hash(path: str) -> str:
    """The first 10 hex digits of the file's sha256 (the "Model hash" other tools print)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


def parameters_text(prompt: str, args: argparse.Namespace, seed: int, width: int, height: int, model_hash: str) -> str:
    """The `parameters` PNG text chunk, in the layout other Stable Diffusion tools read."""
    lines = [prompt, f"Negative prompt: {args.negative_prompt}"]
    fields = [f"Steps: {args.ddim_steps}", f"Sampler: {args.sampler.upper()}", f"CFG scale: {args.scale}",
              f"Seed: {seed}", f"Size: {width}x{height}", f"Model hash: {model_hash}",
              f"Model: {Path(args.ckpt).stem}", f"Eta: {args.ddim_eta}"]
    if getattr(args, "strength", None) is not None:
        fields.append(f"Denoising strength: {args.strength}")
    return "\n".join(lines + [", ".join(fields)])


def save_png(image: Image.Image, folder: Path, pattern: str, digits: int, parameters: str | None) -> Path:
    """Write `image` as the next free `pattern` number in `folder`, atomically: it is written to a
    temporary file first and linked into place only when complete, so an interrupted run leaves
    no half-written PNG and an existing file is never replaced."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        number = next_number(folder, pattern)
        while True:
            target = folder / pattern.format(n=number, width=digits)
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp)


def next_number(folder: Path, pattern: str) -> int:
    """One past the highest number already used by `pattern` in `folder` (0 if none)."""
    prefix, suffix = pattern.split("{")[0], pattern.split("}")[-1]
    used = [int(m.group(1)) for p in folder.iterdir()
            if (m := re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), p.name))]
    return max(used, default=-1) + 1


def make_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Images in rows of `columns` (the original's --n_rows goes to torchvision's make_grid as nrow,
    which is the number of images per row)."""
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


def prompt_batches(args: argparse.Namespace) -> list[list[str]]:
    """The original's batching: one prompt repeated n_samples times, or the file's lines in
    chunks of n_samples."""
    if not args.from_file:
        return [[args.prompt] * args.n_samples]
    lines = [line for line in Path(args.from_file).read_text().splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"--from-file {args.from_file}: the file holds no prompts")
    return [lines[i : i + args.n_samples] for i in range(0, len(lines), args.n_samples)]


def generate(args: argparse.Namespace) -> int:
    check_generation_flags(args)
    batches = prompt_batches(args)
    sd = load_model(args)
    f = sd.config.autoencoder.downsampling_factor
    for flag, value, expected in (("C", getattr(args, "C", None), sd.config.latent_channels),
                                  ("f", getattr(args, "f", None), f)):
        if value is not None and value != expected:
            raise UsageError(f"--{flag} {value}: this {sd.variant} model has {flag} = {expected}")
    multiple = f * sd.unet.downsampling_factor
    for flag in ("H", "W"):
        value = getattr(args, flag, None)
        if value is not None and value % multiple:
            raise UsageError(f"--{flag} {value}: must be a multiple of {multiple} for this {sd.variant} model "
                             f"(the latent, 1/{f} of the image, is halved {len(sd.config.unet.channel_mult) - 1} times)")
    outdir = Path(args.outdir)
    samples = outdir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    model_hash = file_hash(args.ckpt)
    init = None
    if args.command == "img2img":
        init = Image.open(args.init_img).convert("RGB")

    all_images, count = [], 0
    for iteration in range(args.n_iter):
        for prompts in batches:
            first_seed = args.seed + (0 if getattr(args, "fixed_code", False) else count)
            common = dict(negative_prompt=args.negative_prompt, steps=args.ddim_steps, guidance_scale=args.scale,
                          eta=args.ddim_eta, seed=first_seed, progress=args.progress)
            try:
                if init is None:
                    images = sd.txt2img(prompts, sampler=args.sampler, height=args.H, width=args.W, **common)
                else:
                    images = sd.img2img(init, prompts, strength=args.strength, **common)
            except ValueError as error:
                raise UsageError(str(error)) from None
            for j, (prompt, image) in enumerate(zip(prompts, images)):
                if not args.skip_save:
                    text = parameters_text(prompt, args, first_seed + j, image.width, image.height, model_hash)
                    path = save_png(image, samples, "{n:0{width}d}.png", 5, text)
                    print(path)
            all_images += images
            count += len(prompts)
    if not args.skip_grid:
        path = save_png(make_grid(all_images, args.n_rows or args.n_samples), outdir, "grid-{n:0{width}d}.png", 4, None)
        print(path)
    return 0


def bench(args: argparse.Namespace) -> int:
    """Load, encode the prompt, sample, decode: the wall time of each stage, and UNet steps per second."""
    import time

    check_checkpoint_flag(args)
    if not 1 <= args.ddim_steps <= 1000 or args.n_samples < 1:
        raise UsageError(f"--ddim_steps {args.ddim_steps} / --n_samples {args.n_samples}: out of range")
    args.config, args.precision = None, "autocast"
    sync = torch.cuda.synchronize if (args.device or "").startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    sd = load_model(args)
    stages = {"load checkpoint": time.perf_counter() - start}
    prompts = ["a photograph of an astronaut riding a horse"] * args.n_samples
    steps_seen = []
    with torch.no_grad():
        start = time.perf_counter()
        sd.text_encoder(sd.tokenizer(prompts).to(sd.device))
        sync()
        stages["text encoder"] = time.perf_counter() - start
        start = time.perf_counter()
        try:
            latent = sd.txt2img(prompts, steps=args.ddim_steps, guidance_scale=args.scale, height=args.H,
                                width=args.W, seed=0, output="latent", progress=False,
                                callback=lambda i, t, x, p: steps_seen.append(t))
        except ValueError as error:
            raise UsageError(str(error)) from None
        sync()
        stages[f"txt2img to the latent ({len(steps_seen)} steps)"] = time.perf_counter() - start
        start = time.perf_counter()
        sd.vae.decode(latent / sd.config.scale_factor)
        sync()
        stages["VAE decode"] = time.perf_counter() - start
    f = sd.config.autoencoder.downsampling_factor
    print(f"{sd.variant} on {sd.device} ({sd.dtype}), batch {args.n_samples}, "
          f"{latent.shape[3] * f}x{latent.shape[2] * f}, guidance scale {args.scale}")
    for name, seconds in stages.items():
        print(f"  {name:<36} {seconds:8.3f} s")
    sampling = stages[f"txt2img to the latent ({len(steps_seen)} steps)"]
    print(f"  {'sampling steps per second':<36} {len(steps_seen) / sampling:8.3f}")
    return 0


def convert(args: argparse.Namespace) -> int:
    from checkpoints_convert.diffusers import convert as convert_weights

    source = Path(args.input)
    if not source.exists():
        raise UsageError(f"input {source}: no such file or folder")
    to = args.to or ("original" if source.is_dir() else "diffusers")
    try:
        written = convert_weights(source, Path(args.output), variant=args.variant, to=to, half=args.half)
    except (FileExistsError, ValueError, KeyError) as error:
        raise UsageError(str(error)) from None
    print(written)
    return 0


def train_demo(args: argparse.Namespace) -> int:
    from .demo.train import train_demo as train

    for flag in ("autoencoder_steps", "denoiser_steps", "batch_size", "threads"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 1")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError(f"--minutes {args.minutes}: must be > 0")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    config = TrainingConfig(seed=args.seed, batch_size=args.batch_size, autoencoder_steps=args.autoencoder_steps,
                            denoiser_steps=args.denoiser_steps, threads=args.threads)
    try:
        record = train(args.out, config, minutes=args.minutes, progress=args.progress)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"{args.out}: {record['autoencoder_steps_done']} autoencoder + {record['denoiser_steps_done']} "
          f"denoiser steps in {record['wall_seconds'] / 60:.1f} min; final losses (mean of the last 200 steps): "
          f"autoencoder {record['autoencoder_final_loss']}, denoiser {record['denoiser_final_loss']}; "
          f"scale_factor {record['scale_factor']:.5f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return {"txt2img": generate, "img2img": generate, "convert": convert, "bench": bench,
                "train-demo": train_demo}[args.command](args)
    except UsageError as error:
        print(f"python -m ldm {args.command}: error: {error}", file=sys.stderr)
        return 2
