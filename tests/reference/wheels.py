"""Fetch pinned reference wheels from PyPI once and unpack them into the user cache folder.

The cache lives outside the repository (`$LDM_REFERENCE_CACHE`, default ~/.cache/ldm-reference),
so nothing fetched is ever committed. A wheel is a zip: unpacking it needs no install and runs
nothing from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

# The ground truths, pinned so that a test's meaning cannot drift with a new release.
OPEN_CLIP = ("open_clip_torch", "3.3.0")  # ships the original CLIP SimpleTokenizer + BPE merges
# The open_clip the original SD v2 code was written against (Stability's environment pins 2.0.2):
# its text transformer runs sequence-first, as FrozenOpenCLIPEmbedder's permutes expect; 3.x
# switched to batch-first and no longer runs under the original wrapper.
OPEN_CLIP_FOR_SD = ("open_clip_torch", "2.0.2")
SD_ORIGINAL = ("stable-diffusion-sdkit", "2.1.5")  # the Stability/CompVis `ldm` package
# Katherine Crowson's k-diffusion: the samplers AUTOMATIC1111 and ComfyUI run (sampling.py, external.py)
K_DIFFUSION = ("k-diffusion", "0.1.1.post1")
# What the original MiDaS (ldm/modules/midas) builds its DPT-Hybrid from: timm's vit_base_resnet50_384.
# Stability pins no timm; MiDaS v3.1 pins 0.6.12, which no longer imports on Python 3.11 (a dataclass
# default in maxxvit.py); 0.6.13 fixes only that. (DPT's weights were trained under timm 0.4.5, whose
# weight standardisation differs by ~1e-4: ldm.config.MiDaSConfig.std_conv_eps.)
TIMM_FOR_MIDAS = ("timm", "0.6.13")
# The original's input transform resizes with OpenCV (it pins opencv-python 4.6.0.66, built for numpy 1;
# 4.10.0.84 is the first built for numpy 2; INTER_CUBIC is the same code in both).
OPENCV = ("opencv-python-headless", "4.10.0.84")
# The invisible watermark every original script puts in its images (method dwtDct); it imports
# OpenCV (above) and PyWavelets, whose Haar transform it runs.
INVISIBLE_WATERMARK = ("invisible-watermark", "0.2.0")
PYWAVELETS = ("PyWavelets", "1.9.0")
# The v1 checkpoints' tokenizer: transformers' slow CLIPTokenizer as the original v1 environment
# pinned it (transformers 4.19.2), with the huggingface_hub of its time (it imports names from it).
TRANSFORMERS_FOR_V1 = ("transformers", "4.19.2")
HUGGINGFACE_HUB_FOR_HF_TOKENIZER = ("huggingface_hub", "0.6.0")


def cache_root() -> Path:
    root = os.environ.get("LDM_REFERENCE_CACHE") or Path.home() / ".cache" / "ldm-reference"
    return Path(root)


def unpacked_wheel(name: str, version: str) -> Path:
    """Folder holding the unpacked wheel `name==version`, downloading it on first use."""
    target = cache_root() / f"{name}-{version}"
    done = target / ".unpacked"
    if done.exists():
        return target
    download_dir = cache_root() / "wheels"
    download_dir.mkdir(parents=True, exist_ok=True)
    wheel_prefix = name.replace("-", "_") + f"-{version}-"
    wheels = [p for p in download_dir.glob("*.whl") if p.name.lower().startswith(wheel_prefix.lower())]
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(download_dir), f"{name}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"could not download the reference wheel {name}=={version} from PyPI "
                f"(`{' '.join(cmd)}`):\n{result.stderr[-2000:]}"
            )
        wheels = [p for p in download_dir.glob("*.whl") if p.name.lower().startswith(wheel_prefix.lower())]
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(target)
    done.touch()
    return target
