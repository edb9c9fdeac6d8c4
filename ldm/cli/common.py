"""What every command shares: the one-line error, the model flags, loading the model."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from ..distributed import device_for_rank
from ..tasks.common import ArgumentError

# The flag that carries each task argument (the original scripts' names).
FLAGS = {"steps": "--ddim_steps", "guidance_scale": "--scale", "eta": "--ddim_eta", "seed": "--seed",
         "sampler": "--sampler", "karras": "--karras", "height": "--H", "width": "--W", "strength": "--strength",
         "n": "--n_samples", "noise_level": "--noise_level", "tile": "--tile"}


class UsageError(Exception):
    """A bad flag: printed as one line, exit code 2."""


class RunError(Exception):
    """A failure during the run (a full disk, ...): printed as one line, exit code 1."""


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
    add("--ckpt", type=str, help="the checkpoint: a .ckpt or .safetensors file, a diffusers folder, or demo "
                                 "(default: demo, the bundled demo model)")
    add("--variant", type=str, help="the model variant (default: detected)")
    add("--device", type=str, help="cpu, cuda, mps (default: cuda, then mps, then cpu)")
    add("--dtype", type=str, choices=["float32", "float16", "bfloat16"],
        help="the networks' dtype (default: float16 on CUDA, else float32); the sampler steps in float32")
    add("--bf16", action="store_true", help="the v2 scripts' flag: the same as --dtype bfloat16")
    add("--low_memory", action="store_true",
        help="optimizedSD's purpose: the weights stored in bfloat16 and computed in the --dtype, the VAE run in "
             "tiles, the UNet's feed-forwards in chunks (ldm/memory.py); about half the peak memory, not the "
             "same numbers")
    add("--offload", action="store_true",
        help="for a CUDA or MPS --device with too little memory for the whole model: every network waits on the "
             "CPU and is on the device only while it runs (optimizedSD's split; diffusers' enable_model_cpu_offload)")


def resolve_ckpt(ckpt: str | None) -> Path:
    """--ckpt: None or "demo" is the bundled demo model; otherwise a checkpoint file or a diffusers
    folder (one with model_index.json). Checked before anything is loaded."""
    if ckpt is None or ckpt == "demo":
        from ..demo import CHECKPOINT

        if not CHECKPOINT.is_file():
            raise UsageError(f"the bundled demo model {CHECKPOINT} is missing (re-install the package)")
        return CHECKPOINT
    path = Path(ckpt)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UsageError(f"--ckpt {ckpt}: a folder without model_index.json; give a .ckpt/.safetensors file "
                             "or a diffusers pipeline folder")
        return path
    if not path.exists():
        raise UsageError(f"--ckpt {ckpt}: no such checkpoint file or folder")
    if not path.is_file():
        raise UsageError(f"--ckpt {ckpt}: not a regular file (a device, pipe or socket)")
    return path


def check_model_flags(args: argparse.Namespace) -> None:
    """--ckpt (resolve_ckpt), --config's yaml read for the variant, --device present in this
    torch, --dtype suited to it. Checked before anything is loaded."""
    from checkpoints_convert.detect import variant_from_yaml

    from ..pipeline import resolve_dtype

    args.ckpt = str(resolve_ckpt(args.ckpt))
    config = getattr(args, "config", None)
    if config:
        if not Path(config).is_file():
            raise UsageError(f"--config {config}: no such file")
        try:
            found = variant_from_yaml(Path(config))
        except (ValueError, OSError) as error:
            raise UsageError(f"--config {config}: {error}") from None
        if found is None and args.variant is None:
            raise UsageError(f"--config {config}: the yaml does not tell the variant; pass --variant")
        args.variant = args.variant or found[0]
    if getattr(args, "bf16", False):
        if args.dtype not in (None, "bfloat16"):
            raise UsageError(f"--bf16 and --dtype {args.dtype} disagree; give one of them")
        args.dtype = "bfloat16"
    if getattr(args, "offload", False) and requested_device(args).type == "cpu":
        raise UsageError("--offload moves each network to an accelerator only while it runs; give --device cuda or "
                         "mps (on the CPU, --low_memory is the switch)")
    try:
        resolve_dtype(requested_device(args), args.dtype)
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--dtype {args.dtype} / --device {args.device}: {error}") from None


def requested_device(args: argparse.Namespace) -> torch.device:
    """--device, or the default (cuda, then mps, then cpu); one this torch build can use."""
    from ..pipeline import default_device

    if not args.device:
        return default_device()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device}: not a device torch knows; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    available = getattr(backend, "is_available", lambda: False)()
    count = getattr(backend, "device_count", lambda: 1)() if available else 0
    if not available or (device.index or 0) >= count:
        raise UsageError(f"--device {args.device}: this torch {torch.__version__} has no such device "
                         f"({count} {device.type} device(s) found); use --device cpu")
    return device


def load_model(args: argparse.Namespace):
    """The StableDiffusion of --ckpt (a file, or a diffusers folder), after check_model_flags."""
    from ..pipeline import StableDiffusion, resolve_dtype

    try:
        device = device_for_rank(requested_device(args))  # under torchrun, cuda -> cuda:LOCAL_RANK
    except ValueError as error:
        raise UsageError(str(error)) from None
    precision = getattr(args, "precision", "autocast")
    dtype = args.dtype or ("float16" if precision == "autocast" and device.type == "cuda" else "float32")
    try:
        low_memory = getattr(args, "low_memory", False)
        if Path(args.ckpt).is_dir():
            sd = StableDiffusion.from_diffusers(args.ckpt, args.variant, resolve_dtype(device, dtype)).to(device)
            if low_memory:
                sd.enable_low_memory()
        else:
            sd = StableDiffusion.from_checkpoint(args.ckpt, variant=args.variant, device=device, dtype=dtype,
                                                 low_memory=low_memory)
        if getattr(args, "offload", False):
            sd.enable_model_cpu_offload(device)
        return sd
    except KeyError as error:  # str() of a KeyError is the repr of its message: show the message
        raise UsageError(f"--ckpt {args.ckpt}: {error.args[0] if error.args else repr(error)}") from None
    except (ValueError, OSError) as error:
        raise UsageError(f"--ckpt {args.ckpt}: {error}") from None
