"""`python -m ldm txt2img`: the original scripts/txt2img.py."""

from __future__ import annotations

import argparse
import re

from ..distributed import launched
from ..tasks.original_noise import ORIGINAL_SAMPLERS, OriginalNoise
from .common import UsageError, load_model
from .generation import add_generation_flags, check_generation_flags, check_loaded_model
from .job import write_generations


def add_parser(commands) -> None:
    parser = commands.add_parser("txt2img", help="text to image (scripts/txt2img.py)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=7.5, n_iter=2, n_samples=3)
    parser.add_argument("--plms", action="store_true", help="use PLMS sampling (same as --sampler plms)")
    parser.add_argument("--dpm", action="store_true", help="use DPM-Solver++ sampling, as the v2 scripts' --dpm "
                                                         "(same as --sampler dpm_solver)")
    parser.add_argument("--fixed_code", action="store_true", help="the same starting noise for every iteration")
    parser.add_argument("--noise", choices=["seed", "original"], default="seed",
                        help="seed: image i's starting noise from its own CPU generator seeded --seed + i (the same "
                             "on every device and batch); original: drawn as the original script draws it, each "
                             "batch from the device's generator seeded once (ldm/tasks/original_noise.py)")
    parser.add_argument("--H", type=int, help="image height in pixels (default: the model's size)")
    parser.add_argument("--W", type=int, help="image width in pixels (default: the model's size)")
    parser.add_argument("--C", type=int, help="latent channels (checked against the model)")
    parser.add_argument("--f", type=int, help="downsampling factor (checked against the model)")


def run(args: argparse.Namespace) -> int:
    if args.plms and args.dpm:
        raise UsageError("--plms and --dpm: give one sampler")
    for flag, name in (("plms", "plms"), ("dpm", "dpm_solver")):
        if getattr(args, flag):
            if args.sampler not in ("ddim", name):
                raise UsageError(f"--{flag} and --sampler {args.sampler}: give one sampler")
            args.sampler = name
    batches = check_generation_flags(args)
    if args.noise == "original":
        check_original_noise(args)
    sd = load_model(args)
    check_loaded_model(sd, "txt2img", height=args.H, width=args.W)
    for flag, expected in (("C", sd.config.latent_channels), ("f", sd.config.autoencoder.downsampling_factor)):
        value = getattr(args, flag)
        if value is not None and value != expected:
            raise UsageError(f"--{flag} {value}: this {sd.variant} model has {flag} = {expected}")

    def task(prompts, **common):
        return sd.txt2img(prompts, height=args.H, width=args.W, **common)

    if args.noise == "original":
        task = original_noise_task(args, sd)
    return write_generations(args, sd, batches, task)


def check_original_noise(args: argparse.Namespace) -> None:
    """--noise original replays the original's one stream: only its samplers, and no sampler noise
    of ours (which comes from per-image generators, not from that stream)."""
    if args.sampler not in ORIGINAL_SAMPLERS:
        raise UsageError(f"--noise original and --sampler {args.sampler}: the original scripts run "
                         f"{', '.join(ORIGINAL_SAMPLERS)} (--plms, --dpm, DDIM); their noise is only known for those")
    if args.ddim_eta:
        raise UsageError(f"--noise original and --ddim_eta {args.ddim_eta}: DDIM's noise at eta > 0 would come from "
                         "per-image generators, not from the original's stream; use --ddim_eta 0")
    if args.resume or launched()[1] > 1:
        raise UsageError("--noise original draws every batch from one stream, in order: a run with it cannot be "
                         "resumed or split across processes; use --noise seed")


def original_noise_task(args: argparse.Namespace, sd):
    """The txt2img task with each batch's x_T from OriginalNoise; each image's parameters text
    gives the run's --seed and says where in the run the image was drawn."""
    f = sd.config.autoencoder.downsampling_factor
    height, width = args.H or sd.config.image_size, args.W or sd.config.image_size
    noise = OriginalNoise(args.seed, sd.device, (args.n_samples, sd.config.latent_channels, height // f, width // f),
                          sampler=args.sampler, steps=args.ddim_steps, fixed_code=args.fixed_code)
    batch = 0

    def task(prompts, **common):
        nonlocal batch
        images = sd.txt2img(prompts, x_T=noise.next_x_T(len(prompts)), **common)
        batch += 1
        for i, image in enumerate(images):
            # On the fields line (the last; a prompt may say "Seed: 1" too), the run's seed and the place.
            text, fields = image.info["parameters"].rsplit("\n", 1)
            fields = re.sub(r"Seed: \d+", f"Seed: {args.seed}, Noise: original batch {batch} image {i + 1}", fields)
            image.info["parameters"] = f"{text}\n{fields}"
        return images

    return task
