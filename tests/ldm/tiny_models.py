"""Demo-sized models of every task (the demo model's UNet and f4 VAE, random weights), which the
task tests and the bfloat16 tests build, and the command line run on one of them."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from ldm.config import DEMO, PRESETS, MiDaSConfig, NoiseAugmentationConfig
from tests.ldm_command import run_ldm

ROOT = Path(__file__).resolve().parents[2]

TINY_INPAINTING = replace(DEMO, name="demo-inpainting", unet=replace(DEMO.unet, in_channels=9), task="inpaint")
# 7 input channels (the latent and the noise-augmented low-resolution image), noise-level labels.
TINY_UPSCALER = replace(DEMO, name="demo-upscaler", unet=replace(DEMO.unet, in_channels=7, num_classes=1000),
                        task="upscale", noise_augmentation=NoiseAugmentationConfig())
TINY_MIDAS = MiDaSConfig(resnet_layers=(1, 1, 1), stem_width=32, width=64, layers=2, heads=2, hooks=(0, 1),
                         features=32)
TINY_DEPTH = replace(DEMO, name="demo-depth", unet=replace(DEMO.unet, in_channels=5), task="depth2img",
                     depth_model=TINY_MIDAS)
TINY = {config.name: config for config in (DEMO, TINY_INPAINTING, TINY_UPSCALER, TINY_DEPTH)}


def tiny_command(sd, tmp_path: Path, monkeypatch, command: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m ldm COMMAND --ckpt TMP/NAME.safetensors --variant NAME ARGS` in TMP, on the tiny
    model `sd` (saved there), its config registered as a preset before the command line's main: the
    command's own wiring is what is tested, not a full-size model."""
    name = sd.config.name
    monkeypatch.setitem(PRESETS, name, sd.config)
    path = sd.save_checkpoint(tmp_path / f"{name}.safetensors")
    patch = (f"from tests.ldm.tiny_models import TINY\nfrom ldm.config import PRESETS\n"
             f"PRESETS[{name!r}] = TINY[{name!r}]")
    return run_ldm(command, "--ckpt", str(path), "--variant", name, *args, cwd=tmp_path, patch=patch)
