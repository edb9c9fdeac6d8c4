"""`python -m ldm train-demo`: train the small demo model on the shapes dataset (ldm/demo/train.py)."""

from __future__ import annotations

import argparse

from ..demo.train import TrainingConfig
from .common import RunError, UsageError


def add_parser(commands) -> None:
    parser = commands.add_parser("train-demo", help="train the small demo model on the shapes dataset",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainingConfig()
    add = parser.add_argument
    add("--out", type=str, default="demo-model.safetensors", help="the .safetensors file to write (never overwritten)")
    add("--minutes", type=float, help="wall-time cap: stop each stage early when reached")
    add("--seed", type=int, default=defaults.seed, help="the seed of weights, data and noise")
    add("--autoencoder-steps", type=int, default=defaults.autoencoder_steps, help="steps of the autoencoder stage")
    add("--denoiser-steps", type=int, default=defaults.denoiser_steps, help="steps of the text encoder + UNet stage")
    add("--batch-size", type=int, default=defaults.batch_size, help="images per training step")
    add("--threads", type=int, default=defaults.threads, help="CPU threads")
    add("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")


def run(args: argparse.Namespace) -> int:
    from ..demo.train import train_demo

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
        record = train_demo(args.out, config, minutes=args.minutes, progress=args.progress)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # the model could not be written (a full disk): one line, nothing left behind
        raise RunError(str(error)) from None
    print(f"{args.out}: {record['autoencoder_steps_done']} autoencoder + {record['denoiser_steps_done']} "
          f"denoiser steps in {record['wall_seconds'] / 60:.1f} min; final losses (mean of the last 200 steps): "
          f"autoencoder {record['autoencoder_final_loss']}, denoiser {record['denoiser_final_loss']}; "
          f"scale_factor {record['scale_factor']:.5f}")
    return 0
