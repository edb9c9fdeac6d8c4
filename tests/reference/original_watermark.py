"""The ORIGINAL invisible watermark (invisible-watermark 0.2.0's `dwtDct`, what the original scripts
call), run in a subprocess by run_watermark.py over the pinned wheels (wheels.py): the package is
never installed beside our packages, nor is its OpenCV."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .job import run_job
from .wheels import INVISIBLE_WATERMARK, OPENCV, PYWAVELETS, unpacked_wheel

RUNNER = Path(__file__).with_name("run_watermark.py")


def run_package(images: dict[str, np.ndarray], *, mark: bytes | None = None, length: int | None = None
                ) -> dict[str, np.ndarray]:
    """images: name -> [H, W, 3] uint8 RGB. mark: WatermarkEncoder(mark).encode each -> the marked
    RGB images; length: WatermarkDecoder("bytes", 8 * length).decode each -> its bytes (uint8 array)."""
    roots = [str(unpacked_wheel(*wheel)) for wheel in (INVISIBLE_WATERMARK, PYWAVELETS, OPENCV)]
    with tempfile.TemporaryDirectory(prefix="ldm-watermark-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **images)
        job = {"roots": roots, "inputs": str(tmp / "inputs.npz"), "outputs": str(tmp / "outputs.npz"),
               "encode": mark is not None, "mark": (mark or b"").decode("latin-1"), "length": length}
        run_job(RUNNER, job, tmp, "invisible-watermark")
        with np.load(tmp / "outputs.npz") as outputs:
            return {name: outputs[name] for name in outputs.files}
