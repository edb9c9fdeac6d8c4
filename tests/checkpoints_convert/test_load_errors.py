"""from_checkpoint refuses a file that does not match its variant, naming what is wrong, and a
file that matches loads strictly. Small demo-size checkpoints in the original layout."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldm.config import DEMO
from ldm.pipeline import StableDiffusion, resolve_dtype


@pytest.fixture(scope="module")
def original_state(tiny_checkpoint) -> dict[str, torch.Tensor]:
    return load_file(tiny_checkpoint)


def write(tmp_path, state, name="model.safetensors"):
    path = tmp_path / name
    save_file(state, path)
    return path


def test_a_complete_file_loads(tmp_path, original_state):
    sd = StableDiffusion.from_checkpoint(write(tmp_path, original_state), device="cpu")
    assert sd.variant == "demo"
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(sd.unet.conv_out.weight, original_state[key])


def test_a_missing_key_is_named(tmp_path, original_state):
    state = dict(original_state)
    del state["first_stage_model.decoder.conv_out.bias"]
    with pytest.raises(KeyError, match=r"missing 1 key\(s\): first_stage_model.decoder.conv_out.bias"):
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")


def test_an_extra_key_is_named(tmp_path, original_state):
    state = dict(original_state) | {"model.diffusion_model.extra_layer.weight": torch.zeros(3)}
    with pytest.raises(KeyError, match=r"unexpected 1 key\(s\): model.diffusion_model.extra_layer.weight"):
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path, original_state):
    state = dict(original_state)
    key = "first_stage_model.decoder.conv_out.weight"
    state[key] = torch.zeros(3, 7, 3, 3)
    with pytest.raises(ValueError) as info:
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")
    message = str(info.value)
    assert "vae.decoder.conv_out.weight" in message and "(3, 7, 3, 3)" in message and f"(3, {DEMO.autoencoder.base_channels}, 3, 3)" in message


def test_an_unknown_variant_and_missing_ema_are_refused(tmp_path, original_state):
    path = write(tmp_path, original_state)
    with pytest.raises(ValueError, match="variant='v3' is not known"):
        StableDiffusion.from_checkpoint(path, variant="v3", device="cpu")
    with pytest.raises(KeyError, match="no EMA weights"):
        StableDiffusion.from_checkpoint(path, device="cpu", use_ema=True)


def test_a_wrong_explicit_variant_fails_with_the_keys(tmp_path, original_state):
    with pytest.raises((KeyError, ValueError), match="pass variant= explicitly|shape"):
        StableDiffusion.from_checkpoint(write(tmp_path, original_state), variant="v1", device="cpu")


def test_dtype_rules():
    assert resolve_dtype(torch.device("cpu"), None) == torch.float32
    assert resolve_dtype(torch.device("cuda"), None) == torch.float16
    assert resolve_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        resolve_dtype(torch.device("cpu"), torch.float16)
