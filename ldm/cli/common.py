"""What every command shares: the one-line error, the model flags, loading the model."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from ..tasks.common import ArgumentError

# The flag that carries each task argument (the original scripts' names).
FLAGS = {"steps": "--ddim_steps", "guidance_scale": "--scale", "eta": "--ddim_eta", "seed": "--seed",
         "sampler": "--sampler", "height": "--H", "width": "--W", "strength": "--strength", "n": "--n_samples"}


class UsageError(Exception):
    """A bad flag: printed as one line, exit code 2."""


@contextlib.contextmanager
def flag_errors():
    """A task's ArgumentError or ValueError becomes a UsageError; an ArgumentError names the flag
    that carries the argument instead ("--ddim_steps 0: must be an int in 1..1000")."""
    try:
        yield
    except ArgumentError as error:
        raise UsageError(f"{FLAGS.get(error.argument, error.argument)} {error.value}: {error.problem}") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--ckpt", type=str, help="path to the checkpoint (.ckpt or .safetensors; default: the bundled demo model)")
    add("--variant", type=str, help="the model variant (default: detected)")
    add("--device", type=str, help="cpu, cuda, mps (default: cuda, then mps, then cpu)")
    add("--dtype", type=str, choices=["float32", "float16", "bfloat16"], help="weights and activations dtype")


def check_model_flags(args: argparse.Namespace) -> None:
    """--ckpt must name a file (no --ckpt: the demo model shipped with the package); --dtype must
    suit --device. Checked before anything is loaded."""
    from ..pipeline import resolve_dtype

    if args.ckpt is None:
        from ..demo import CHECKPOINT

        if not CHECKPOINT.is_file():
            raise UsageError(f"no --ckpt given and the bundled demo model {CHECKPOINT} is missing "
                             "(re-install the package, or pass --ckpt)")
        args.ckpt = str(CHECKPOINT)
    if not Path(args.ckpt).is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such checkpoint file")
    try:
        resolve_dtype(requested_device(args), args.dtype)
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--dtype {args.dtype} / --device {args.device}: {error}") from None


def requested_device(args: argparse.Namespace) -> torch.device:
    """--device, or the default (cuda, then mps, then cpu)."""
    from ..pipeline import default_device

    return torch.device(args.device) if args.device else default_device()


def load_model(args: argparse.Namespace):
    """The StableDiffusion of --ckpt (its variant from --variant, --config's yaml, or detected)."""
    from checkpoints_convert.detect import variant_from_yaml

    from ..pipeline import StableDiffusion

    variant = args.variant
    if variant is None and getattr(args, "config", None):
        found = variant_from_yaml(Path(args.config))
        if found is None:
            raise UsageError(f"--config {args.config}: the yaml does not tell the variant; pass --variant")
        variant = found[0]
    device = requested_device(args)
    precision = getattr(args, "precision", "autocast")
    dtype = args.dtype or ("float16" if precision == "autocast" and device.type == "cuda" else "float32")
    try:
        return StableDiffusion.from_checkpoint(args.ckpt, variant=variant, device=device, dtype=dtype)
    except (ValueError, KeyError, OSError) as error:
        raise UsageError(f"--ckpt {args.ckpt}: {error}") from None
