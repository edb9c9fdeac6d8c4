"""Fixtures shared by the test packages, and the `slow` marker.

`python -m pytest` runs everything (CI, README line 2). `python -m pytest -m "not slow"` leaves out
the full-size parity tests, the notebooks, training and the many-sample command-line runs: a
developer's loop of a few minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldm.config import DEMO
from ldm.pipeline import StableDiffusion
from tests.reference.offline import no_network


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-size parity, notebooks, training, many-sample CLI runs "
                                       "(deselect with -m \"not slow\"; CI runs them)")


@pytest.fixture(scope="session")
def tiny_sd() -> StableDiffusion:
    """A random model of the demo model's size (64x64 images, f4 latents of 16x16), from
    torch.manual_seed(0): the pipeline's contracts, without a download or a trained model."""
    torch.manual_seed(0)
    return StableDiffusion(DEMO).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_sd, tmp_path_factory) -> Path:
    """tiny_sd saved in the original single-file layout (safetensors)."""
    return tiny_sd.save_checkpoint(tmp_path_factory.mktemp("tiny-ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def offline():
    """For tests that drive diffusers / transformers: anything that tries the network fails loudly."""
    with no_network():
        yield
