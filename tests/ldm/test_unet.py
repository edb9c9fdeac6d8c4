"""UNet parity with the ORIGINAL UNetModel (stable-diffusion-sdkit 2.1.5), full-size, random weights.

Each preset's UNet is built by the original code from the hyper-parameters of its original yaml
(tests/reference/original_configs.py, not derived from our configs), every tensor randomised, run on random
inputs at 16x24 latents; the same weights go through our key table into our UNet.
"""

import pytest
import torch

from checkpoints_convert.keymap.unet import original_to_ours
from checkpoints_convert.remap import load_state, rename_keys
from ldm.config import PRESETS, UNetConfig
from ldm.modules.attention import set_attention_mode
from ldm.modules.unet import UNet
from tests.reference.original_configs import UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity

LATENT_H, LATENT_W, BATCH = 16, 24, 2


def make_inputs(config: UNetConfig, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "x": torch.randn(BATCH, config.in_channels, LATENT_H, LATENT_W, generator=g),
        "t": torch.tensor([17, 981]),
        "context": torch.randn(BATCH, 77, config.context_dim, generator=g),
    }
    if config.num_classes is not None:
        inputs["y"] = torch.tensor([20, 350])
    return inputs


def unet_from_original_state(config: UNetConfig, state: dict) -> UNet:
    with torch.device("meta"):
        unet = UNet(config)
    load_state(unet, rename_keys(state, original_to_ours(config), "unet"), "unet", assign=True)
    return unet.eval()


def test_v2_v_shares_the_v2_unet():
    assert PRESETS["v2-v"].unet == PRESETS["v2"].unet


@pytest.mark.slow  # full-size UNets
@pytest.mark.parametrize("preset", list(UNET_PARAMS))
def test_unet_matches_the_original(preset):
    config = PRESETS[preset].unet
    inputs = make_inputs(config, seed=len(preset))
    state, outputs = run_original("unet", {"image_size": 32, **UNET_PARAMS[preset]}, inputs, seed=1)
    reference = outputs["out"]
    assert reference.shape == (BATCH, 4, LATENT_H, LATENT_W)
    assert reference.std() > 0.1, "the reference output is trivial: the test would prove nothing"

    table = original_to_ours(config)
    assert set(table) == set(state), "the key table must cover the original UNet exactly"
    unet = unet_from_original_state(config, state)
    assert set(table.values()) == set(unet.state_dict())

    with torch.no_grad():
        ours = unet(inputs["x"], inputs["t"], inputs["context"], inputs.get("y"))
    error = relative_error(ours, reference)
    print(f"unet {preset} {LATENT_H}x{LATENT_W} fp32: relative max error {error:.2e}")
    size = f"latent {LATENT_H}x{LATENT_W}, batch {BATCH}"
    record_parity("UNet", preset if preset != "v2" else "v2, v2-v", size, "eps / v", "original ldm", error, 1e-5)
    assert error <= 1e-5

    if preset == "v1":  # the other attention paths compute the same function
        for mode in ("math", "sliced"):
            set_attention_mode(unet, mode, slice_size=100)
            with torch.no_grad():
                other = unet(inputs["x"], inputs["t"], inputs["context"])
            error = relative_error(other, reference)
            record_parity("UNet", preset, size, f"eps, attention={mode}", "original ldm", error, 1e-5)
            assert error <= 1e-5, mode


TINY = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_heads=2,
                  context_dim=16, norm_groups=8)


@pytest.mark.parametrize(
    "x_shape, context_shape, t, message",
    [
        ((1, 3, 8, 8), (1, 5, 16), 10, "[B, 4, H, W], got [1, 3, 8, 8]"),
        ((1, 4, 8), (1, 5, 16), 10, "[B, 4, H, W], got [1, 4, 8]"),
        ((1, 4, 8, 7), (1, 5, 16), 10, "multiples of 2"),
        ((1, 4, 8, 8), (1, 5, 12), 10, "[1, tokens, 16], got [1, 5, 12]"),
        ((2, 4, 8, 8), (1, 5, 16), 10, "[2, tokens, 16], got [1, 5, 16]"),
        ((2, 4, 8, 8), (2, 5, 16), torch.tensor([1, 2, 3]), "[2], got [3]"),
    ],
)
def test_bad_inputs_name_the_expected_and_received_shape(x_shape, context_shape, t, message):
    unet = UNet(TINY)
    with pytest.raises(ValueError) as info:
        unet(torch.zeros(x_shape), t, torch.zeros(context_shape))
    assert message in str(info.value)


def test_class_labels_required_exactly_when_configured():
    with pytest.raises(ValueError, match="takes no class labels"):
        UNet(TINY)(torch.zeros(1, 4, 8, 8), 1, torch.zeros(1, 5, 16), y=torch.tensor([3]))
    with pytest.raises(ValueError, match="needs class labels"):
        UNet(UNetConfig(**{**TINY.__dict__, "num_classes": 10}))(torch.zeros(1, 4, 8, 8), 1, torch.zeros(1, 5, 16))
