"""One server process for the API tests (tests/serve/test_*.py), on a models folder holding the
demo model, demo-sized inpainting, x4-upscaler and depth models (random weights), a text file, and
a symlink to a checkpoint outside the folder (which must not be listed)."""

from __future__ import annotations

import shutil

import pytest
import torch
import webuiapi

from ldm import StableDiffusion
from ldm.config import PRESETS
from ldm.demo import CHECKPOINT
from tests.ldm.tiny_models import TINY, TINY_DEPTH, TINY_INPAINTING, TINY_UPSCALER

from .server_process import ServerProcess

DEMO = "demo.safetensors"
INPAINTING = "inpaint/demo-inpainting.safetensors"
UPSCALER = "demo-upscaler.safetensors"
DEPTH = "depth/demo-depth.safetensors"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    folder = root / "models"
    (folder / "inpaint").mkdir(parents=True)
    (folder / "depth").mkdir()
    shutil.copy(CHECKPOINT, folder / DEMO)
    with pytest.MonkeyPatch.context() as patch:
        for name, config in TINY.items():
            patch.setitem(PRESETS, name, config)
        for path, config in ((INPAINTING, TINY_INPAINTING), (UPSCALER, TINY_UPSCALER), (DEPTH, TINY_DEPTH)):
            torch.manual_seed(0)
            StableDiffusion(config).eval().save_checkpoint(folder / path)
    (folder / "notes.txt").write_text("not a model")
    shutil.copy(CHECKPOINT, root / "outside.safetensors")
    (folder / "escape.safetensors").symlink_to(root / "outside.safetensors")
    return folder


@pytest.fixture(scope="session")
def server(models):
    process = ServerProcess(models.parent, "--models-dir", "models", "--ckpt", DEMO, "--outdir", "out")
    yield process
    process.stop()


@pytest.fixture
def api(server):
    """A webuiapi client, and the demo model selected again afterwards (a test may switch)."""
    client = webuiapi.WebUIApi(port=server.port)
    yield client
    if not client.get_options()["sd_model_checkpoint"].startswith(DEMO):
        client.set_options({"sd_model_checkpoint": DEMO})


def tiny_model(path, variant: str) -> StableDiffusion:
    """A checkpoint of the models folder loaded in this process, as the server loads it."""
    with pytest.MonkeyPatch.context() as patch:
        for name, config in TINY.items():
            patch.setitem(PRESETS, name, config)
        return StableDiffusion.from_checkpoint(path, variant=variant, device="cpu")
