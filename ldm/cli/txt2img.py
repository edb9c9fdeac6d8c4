"""`python -m ldm txt2img`: the original scripts/txt2img.py."""

from __future__ import annotations

import argparse

from .common import UsageError, load_model
from .generation import (add_generation_flags, check_generation_flags, check_loaded_model,
                         write_generations)


def add_parser(commands) -> None:
    parser = commands.add_parser("txt2img", help="text to image (scripts/txt2img.py)",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generation_flags(parser, scale=7.5, n_iter=2, n_samples=3)
    parser.add_argument("--plms", action="store_true", help="use PLMS sampling (same as --sampler plms)")
    parser.add_argument("--dpm", action="store_true", help="use DPM-Solver++ sampling, as the v2 scripts' --dpm "
                                                         "(same as --sampler dpm_solver)")
    parser.add_argument("--fixed_code", action="store_true", help="the same starting noise for every iteration")
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
    sd = load_model(args)
    check_loaded_model(sd, "txt2img", height=args.H, width=args.W)
    for flag, expected in (("C", sd.config.latent_channels), ("f", sd.config.autoencoder.downsampling_factor)):
        value = getattr(args, flag)
        if value is not None and value != expected:
            raise UsageError(f"--{flag} {value}: this {sd.variant} model has {flag} = {expected}")

    def task(prompts, **common):
        return sd.txt2img(prompts, height=args.H, width=args.W, **common)

    return write_generations(args, sd, batches, task)
