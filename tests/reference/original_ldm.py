"""Run the ORIGINAL Stable Diffusion code (stable-diffusion-sdkit 2.1.5's `ldm`) in a subprocess.

Its top-level package is also called `ldm`, so it never shares a process with ours: the test writes
the inputs to a safetensors file, `run_original.py` builds the original module with random weights
and writes back its state dict (original key names) and outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .wheels import K_DIFFUSION, OPEN_CLIP_FOR_SD, OPENCV, SD_ORIGINAL, TIMM_FOR_MIDAS, unpacked_wheel

RUNNER = Path(__file__).with_name("run_original.py")


def original_root() -> Path:
    return unpacked_wheel(*SD_ORIGINAL)


def run_original(component: str, params: dict, inputs: dict[str, torch.Tensor], seed: int = 0
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (state dict of the randomised original module, its outputs on `inputs`)."""
    root = original_root()
    with tempfile.TemporaryDirectory(prefix="ldm-reference-") as tmp:
        tmp = Path(tmp)
        save_file({k: v.contiguous() for k, v in inputs.items()}, tmp / "inputs.safetensors")
        job = {
            "component": component, "params": params, "seed": seed, "original_root": str(root),
            "inputs": str(tmp / "inputs.safetensors"), "outputs": str(tmp / "outputs.safetensors"),
            "state_dict": str(tmp / "state.safetensors"), "threads": torch.get_num_threads(),
            "open_clip_root": str(unpacked_wheel(*OPEN_CLIP_FOR_SD)),
        }
        if component == "sampling":
            job["k_diffusion_root"] = str(unpacked_wheel(*K_DIFFUSION))
        if "depth2img" in params:  # the depth model's MiDaS: timm and OpenCV (run_midas.py)
            job["timm_root"], job["opencv_root"] = (str(unpacked_wheel(*TIMM_FOR_MIDAS)),
                                                    str(unpacked_wheel(*OPENCV)))
        (tmp / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "PYTHONPATH": str(root)}
        result = subprocess.run([sys.executable, str(RUNNER), str(tmp / "job.json")],
                                cwd=tmp, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the original code failed on {component} {params}:\n{result.stderr[-4000:]}")
        state = load_file(tmp / "state.safetensors") if component in ("unet", "autoencoder") else {}
        return state, load_file(tmp / "outputs.safetensors")


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max|ours - ref| / max|ref|: the parity measure of every test."""
    return ((ours.double() - reference.double()).abs().max() / reference.double().abs().max()).item()
