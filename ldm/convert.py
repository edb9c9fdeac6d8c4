"""Whole-model conversions between the two file layouts: an original single file (.ckpt or
.safetensors) and a diffusers pipeline folder, through a StableDiffusion (a v2 file without a yaml
needs its UNet run once to tell eps from v, so a conversion needs the model, not only the tables).
"""

from __future__ import annotations

from pathlib import Path

import torch

from checkpoints_convert.diffusers import check_output_folder

from .pipeline import StableDiffusion


def convert(in_path: str | Path, out_path: str | Path, variant: str | None = None, to: str = "diffusers",
            half: bool = False) -> Path:
    """Original single file -> diffusers folder (to="diffusers"), or folder -> original file
    (to="original", `.safetensors` or `.ckpt` by out_path's extension). Weights are stored float32,
    or float16 with half=True. variant=None detects it (the file's rules, or the folder's configs)."""
    dtype = torch.float16 if half else torch.float32
    if to == "diffusers":
        check_output_folder(out_path)  # before the long load
        sd = StableDiffusion.from_checkpoint(in_path, variant, device="cpu", dtype=torch.float32)
        return sd.save_diffusers(out_path, dtype)
    if to == "original":
        if Path(out_path).exists():
            raise FileExistsError(f"{out_path} exists; choose another name (files are never overwritten)")
        sd = StableDiffusion.from_diffusers(in_path, variant)
        return sd.to(dtype).save_checkpoint(out_path)
    raise ValueError(f"to={to!r}: use 'diffusers' (original file -> folder) or 'original' (folder -> file)")
