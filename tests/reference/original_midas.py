"""Run the ORIGINAL MiDaS DPT-Hybrid and its input transform (run_midas.py) in a subprocess, with
the timm and OpenCV the harness pins (wheels.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .job import run_job
from .original_ldm import original_root
from .wheels import OPENCV, TIMM_FOR_MIDAS, unpacked_wheel

RUNNER = Path(__file__).with_name("run_midas.py")


def run_original_midas(inputs: dict[str, torch.Tensor], seed: int = 0
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """inputs: `midas_x*` [B, 3, H, W] for the network, `image_hwc*` [H, W, 3] in [-1, 1] for the
    transform. -> (the randomised DPTDepthModel's state dict, original key names; outputs: `depth*`
    [B, 1, H, W] as MiDaSInference returns it, `midas_in*` [3, h, w] as AddMiDaS makes it)."""
    with tempfile.TemporaryDirectory(prefix="ldm-midas-") as tmp:
        tmp = Path(tmp)
        save_file({k: v.contiguous() for k, v in inputs.items()}, tmp / "inputs.safetensors")
        job = {"seed": seed, "threads": torch.get_num_threads(), "original_root": str(original_root()),
               "timm_root": str(unpacked_wheel(*TIMM_FOR_MIDAS)), "opencv_root": str(unpacked_wheel(*OPENCV)),
               "inputs": str(tmp / "inputs.safetensors"), "outputs": str(tmp / "outputs.safetensors"),
               "state_dict": str(tmp / "state.safetensors")}
        run_job(RUNNER, job, tmp, "the original MiDaS")
        return load_file(tmp / "state.safetensors"), load_file(tmp / "outputs.safetensors")
