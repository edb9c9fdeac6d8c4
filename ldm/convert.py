"""Whole-model conversions between the two file layouts, an original single file (.ckpt,
.safetensors) and a diffusers pipeline folder, and between the single-file formats:

    convert("sd-v1-5.ckpt", "sd-v1-5.safetensors")                  # single file -> single file
    convert("sd-v1-5.ckpt", "v1-5-emaonly.safetensors", ema="use", half=True)
    convert("sd-v1-5.safetensors", "sd15-diffusers")                # -> a diffusers folder
    convert("sd15-diffusers", "back.ckpt")                          # a diffusers folder -> a file

What is written follows the output's name: `.safetensors`, `.ckpt`, `.pt` or `.pth` is an original
single file; a name without an extension (or an existing empty folder) is a diffusers folder; `to`
says it explicitly, and a name that contradicts it is refused. Nothing is ever overwritten, and
the output is checked before the (long) read of the input. The errors name the parameters as the
command line's flags, which carry the same names (--to, --ema, --half).

A single file becomes a single file key for key (checkpoints_convert.read/load: the file is first
checked against its variant's layout, every key accounted for): the same tensors, float16 with
half=True (the network weights; the schedule buffers and counters keep their dtype), and the EMA
weights (`model_ema.*`) kept, dropped, or used as the UNet's weights (an "ema-only" file). To or
from a diffusers folder the weights go through a StableDiffusion (a v2 file without a yaml needs
its UNet run once to tell eps from v, which the folder's scheduler config records).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from checkpoints_convert import layout
from checkpoints_convert.diffusers import check_output_folder
from checkpoints_convert.load import read_original
from checkpoints_convert.read import detect_format
from checkpoints_convert.save import CHECKPOINT_SUFFIXES, check_new_file, write_checkpoint

from .pipeline import StableDiffusion

EMA_CHOICES = ("keep", "drop", "use")
SINGLE_FILE = ", ".join(CHECKPOINT_SUFFIXES)


def output_layout(out_path: str | Path, to: str | None = None) -> str:
    """'original' or 'diffusers': `to`, checked against the output's name, or told by the name."""
    out_path = Path(out_path)
    if to not in (None, "original", "diffusers"):
        raise ValueError(f"to={to!r}: use 'diffusers' (a pipeline folder) or 'original' (a single file)")
    suffix, is_folder = out_path.suffix, out_path.is_dir()
    if to == "diffusers" and suffix in CHECKPOINT_SUFFIXES and not is_folder:
        raise ValueError(f"--to diffusers, but the output {out_path} has the single-file extension {suffix!r}: a "
                         "diffusers pipeline is a folder; name one without an extension")
    if to == "original" and (is_folder or suffix not in CHECKPOINT_SUFFIXES):
        found = "is a folder" if is_folder else f"has the extension {suffix!r}" if suffix else "has no extension"
        raise ValueError(f"--to original, but the output {out_path} {found}: an original checkpoint is one "
                         f"file named {SINGLE_FILE}")
    if to is not None:
        return to
    if is_folder or not suffix:
        return "diffusers"
    if suffix in CHECKPOINT_SUFFIXES:
        return "original"
    raise ValueError(f"the output {out_path} has the unknown extension {suffix!r}: name a {SINGLE_FILE} file (an "
                     "original single file) or a folder without an extension (diffusers), or say which with --to")


def convert(in_path: str | Path, out_path: str | Path, variant: str | None = None, to: str | None = None,
            half: bool = False, ema: str | None = None) -> Path:
    """Convert `in_path` (an original file or a diffusers folder) to `out_path` -> the path written.

    to: "original" or "diffusers"; None: by out_path's name (see the module's docstring).
    half: float16 weights. Without it, a single file keeps its dtypes; to or from a diffusers folder,
    the weights are stored float32.
    ema: what becomes of an original file's EMA weights: "keep" (beside the training weights; the
    default for a single file), "drop" (the default for a diffusers folder, which holds one UNet)
    or "use" (the EMA weights become the UNet's).
    variant=None detects it (the file's rules, or the folder's configs)."""
    in_path, out_path = Path(in_path), Path(out_path)
    target = output_layout(out_path, to)
    source = "diffusers" if in_path.is_dir() else "original"
    if ema not in (None, *EMA_CHOICES):
        raise ValueError(f"ema={ema!r}: use one of {', '.join(map(repr, EMA_CHOICES))}")
    if source == target == "diffusers":
        raise ValueError(f"the input {in_path} and the output {out_path} are both diffusers folders: nothing to "
                         f"convert; name a {SINGLE_FILE} file to write an original checkpoint")
    if target == "diffusers" and ema == "keep":
        raise ValueError("--ema keep: a diffusers folder holds one set of UNet weights; choose --ema use (the EMA "
                         "weights) or --ema drop (the training weights, the default)")
    if source == "diffusers" and ema == "use":
        raise ValueError(f"--ema use: the input {in_path} is a diffusers folder, which holds no EMA weights")
    # The output is checked before the input is read (minutes, for a large file).
    if target == "diffusers":
        check_output_folder(out_path)
    else:
        check_new_file(out_path)
    dtype = torch.float16 if half else torch.float32
    if target == "diffusers":
        sd = StableDiffusion.from_checkpoint(in_path, variant, device="cpu", dtype=torch.float32,
                                             use_ema=ema == "use")
        return sd.save_diffusers(out_path, dtype)
    if source == "diffusers":
        sd = StableDiffusion.from_diffusers(in_path, variant)
        return sd.to(dtype).save_checkpoint(out_path)
    return convert_file(in_path, out_path, variant, half, ema or "keep")


def convert_file(in_path: Path, out_path: Path, variant: str | None, half: bool, ema: str) -> Path:
    """An original file -> an original file (the format by out_path's extension), key for key.

    Every key of the input is accounted for first (read_original refuses a file that is not a known
    variant's layout); then the file's own tensors are written, the schedule buffers and training
    counters included, so nothing the original code reads is lost. A `.safetensors` input's
    metadata is carried over."""
    checkpoint = read_original(in_path, variant)  # every key accounted for
    config, tensors = checkpoint.config, dict(checkpoint.tensors)
    if ema == "use":
        # LitEma's names: the UNet key `model.diffusion_model.a.b` is `model_ema.diffusion_modelab`.
        unet_keys = [k for k in layout.original_to_ours(config, set(tensors))[0] if k.startswith(layout.UNET_PREFIX)]
        if layout.ema_key(unet_keys[0]) not in tensors:
            raise ValueError(f"--ema use, but {in_path} holds no EMA weights (no {layout.EMA_PREFIX}* keys)")
        tensors |= {key: tensors[layout.ema_key(key)] for key in unet_keys}
    if ema in ("use", "drop"):
        tensors = {k: v for k, v in tensors.items() if not k.startswith(layout.EMA_PREFIX)}
    if half:
        # The weights; not the float32 schedule buffers, scale_factor, logvar or the EMA's decay.
        tensors = {k: v.half() if v.is_floating_point() and k not in layout.IGNORED_KEYS else v
                   for k, v in tensors.items()}
    metadata = None
    if detect_format(in_path) == "safetensors":
        with safe_open(in_path, framework="pt") as f:
            metadata = f.metadata()
    return write_checkpoint(out_path, tensors, metadata)
