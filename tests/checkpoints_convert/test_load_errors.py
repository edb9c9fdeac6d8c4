"""from_checkpoint refuses a file that does not match its variant, naming what is wrong, and a
file that matches loads strictly. Small demo-size checkpoints in the original layout."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints_convert.detect import VariantError
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
    with pytest.raises(KeyError, match=r"missing 1 key\(s\): 'first_stage_model\.decoder\.conv_out\.bias'"):
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")


def test_an_extra_key_is_named(tmp_path, original_state):
    state = dict(original_state) | {"model.diffusion_model.extra_layer.weight": torch.zeros(3)}
    with pytest.raises(KeyError, match=r"unexpected 1 key\(s\): 'model\.diffusion_model\.extra_layer\.weight'"):
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path, original_state):
    state = dict(original_state)
    key = "first_stage_model.decoder.conv_out.weight"
    state[key] = torch.zeros(3, 7, 3, 3)
    with pytest.raises(ValueError) as info:
        StableDiffusion.from_checkpoint(write(tmp_path, state), device="cpu")
    message = str(info.value)
    assert "'vae.decoder.conv_out.weight'" in message and "(3, 7, 3, 3)" in message
    assert f"(3, {DEMO.autoencoder.base_channels}, 3, 3)" in message


def test_a_key_with_escape_sequences_is_shown_escaped(tmp_path, original_state):
    """A key is the file's text: an ANSI escape or a newline in it must not reach the terminal raw."""
    key = "model.diffusion_model.\x1b[31mevil\nkey"
    with pytest.raises(KeyError) as info:
        StableDiffusion.from_checkpoint(write(tmp_path, original_state | {key: torch.zeros(3)}), device="cpu")
    message = info.value.args[0]
    assert f"unexpected 1 key(s): {key!r}." in message
    assert "\x1b" not in message and "\n" not in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 0.0, -0.25])
def test_a_scale_factor_that_is_not_finite_and_positive_is_refused(tmp_path, original_state, value):
    """The decoder divides by it: the old loader took any number and the images came out black."""
    path = write(tmp_path, original_state | {"scale_factor": torch.tensor(value)})
    with pytest.raises(ValueError) as info:
        StableDiffusion.from_checkpoint(path, device="cpu")
    assert str(info.value) == (f"{path}: key 'scale_factor' holds {value!r}; the latent scale must be a finite "
                               "number > 0 (the decoder divides by it)")


@pytest.mark.parametrize("tensor, described", [
    (torch.tensor([0.18, 0.18]), "torch.float32 tensor of shape (2,)"),  # float() of it raised a bare error
    (torch.tensor(1, dtype=torch.int64), "torch.int64 tensor of shape ()"),
], ids=["two numbers", "an integer"])
def test_a_scale_factor_that_is_not_one_float_is_refused(tmp_path, original_state, tensor, described):
    path = write(tmp_path, original_state | {"scale_factor": tensor})
    with pytest.raises(ValueError) as info:
        StableDiffusion.from_checkpoint(path, device="cpu")
    assert str(info.value) == (f"{path}: key 'scale_factor' is a {described}; the latent scale must be one "
                               "floating-point number")


def test_a_valid_scale_factor_is_the_models(tmp_path, original_state):
    path = write(tmp_path, original_state | {"scale_factor": torch.tensor(0.25)})
    assert StableDiffusion.from_checkpoint(path, device="cpu").config.scale_factor == 0.25


def test_an_oversize_yaml_beside_the_checkpoint_is_refused(tmp_path, original_state):
    """The old loader read any size (and returned to the weights when the yaml said nothing)."""
    path = write(tmp_path, original_state)
    path.with_suffix(".yaml").write_text("# padding\n" * 110_000)
    with pytest.raises(VariantError, match=r"model\.yaml: the config yaml is larger than 1048576 bytes"):
        StableDiffusion.from_checkpoint(path, device="cpu")


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
