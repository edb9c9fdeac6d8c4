"""MiDaS DPT-Hybrid written by hand (ldm/modules/midas/): against the ORIGINAL DPTDepthModel
(stable-diffusion-sdkit 2.1.5 over timm 0.6.13) at 384x384 and at a non-square size, every tensor
random, its weights loaded through our key table; the input transform against the original's
AddMiDaS (OpenCV's bicubic); the table's coverage; the resize rule; bad inputs."""

from __future__ import annotations

import pytest
import torch

from checkpoints_convert.keymap import midas as midas_keys
from ldm.config import MiDaSConfig
from ldm.modules.midas import MiDaS
from ldm.modules.midas.transform import midas_input, midas_size
from tests.reference.original_ldm import relative_error
from tests.reference.original_midas import run_original_midas
from tests.reference.parity_record import record_parity

TOLERANCE = 1e-5
# The original keeps these tensors in every file (timm builds them, DPT never runs them): 368 keys in all.
ORIGINAL_KEY_COUNT = 368


@pytest.fixture(scope="module")
def original():
    g = torch.Generator().manual_seed(5)
    inputs = {"midas_x_square": torch.rand(1, 3, 384, 384, generator=g) * 2 - 1,
              "midas_x_wide": torch.rand(2, 3, 256, 448, generator=g) * 2 - 1,
              "image_hwc_small": torch.rand(300, 500, 3, generator=g) * 2 - 1,
              "image_hwc_large": torch.rand(600, 800, 3, generator=g) * 2 - 1}
    state, outputs = run_original_midas(inputs, seed=3)
    return inputs, state, outputs


@pytest.fixture(scope="module")
def ours(original):
    _, state, _ = original
    table = midas_keys.original_to_ours(MiDaSConfig())
    model = MiDaS(MiDaSConfig()).eval()
    missing, unexpected = model.load_state_dict({table[k]: v for k, v in state.items() if k in table}, strict=False)
    assert not missing and not unexpected
    return model


@pytest.mark.slow  # the full-size network, built and run by the original code
def test_the_key_table_covers_the_original_state_dict_exactly(original):
    _, state, _ = original
    table = midas_keys.original_to_ours(MiDaSConfig())
    assert len(state) == ORIGINAL_KEY_COUNT
    assert set(state) == set(table) | midas_keys.IGNORED and not set(table) & midas_keys.IGNORED
    with torch.device("meta"):
        ours = MiDaS(MiDaSConfig()).state_dict()
    assert sorted(table.values()) == sorted(ours)
    assert all(tuple(state[k].shape) == tuple(ours[v].shape) for k, v in table.items())


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("square", "384x384, batch 1"), ("wide", "256x448, batch 2")])
def test_midas_matches_the_original(original, ours, name, size):
    inputs, _, outputs = original
    expected = outputs[f"depth_{name}"]
    assert expected.shape == (inputs[f"midas_x_{name}"].shape[0], 1, *inputs[f"midas_x_{name}"].shape[2:])
    assert expected.std() > 0.05 * expected.abs().max() > 0  # a map that varies, not a constant or zeros
    with torch.no_grad():
        depth = ours(inputs[f"midas_x_{name}"])
    error = relative_error(depth, expected)
    print(f"MiDaS {size}: {error:.2e}")
    record_parity("MiDaS DPT-Hybrid", "v2-depth", size, "depth", "original DPTDepthModel (timm 0.6.13)", error,
                  TOLERANCE)
    assert error <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small", "large"])
def test_the_input_transform_matches_addmidas(original, name):
    inputs, _, outputs = original
    image = inputs[f"image_hwc_{name}"]
    expected = outputs[f"midas_in_{name}"]
    ours = midas_input(image.permute(2, 0, 1)[None])[0]
    assert ours.shape == expected.shape
    error = (ours.double() - expected.double()).abs().max().item()
    print(f"AddMiDaS {tuple(image.shape[:2])} -> {tuple(expected.shape[1:])}: max |torch - OpenCV| {error:.2e}")
    record_parity("MiDaS input transform", "v2-depth", f"{image.shape[0]}x{image.shape[1]} -> "
                  f"{expected.shape[1]}x{expected.shape[2]}", "midas_in", "original AddMiDaS (OpenCV 4.10 bicubic)",
                  error, TOLERANCE)
    assert error <= TOLERANCE


@pytest.mark.parametrize("height, width, expected", [
    (512, 512, (384, 384)), (512, 768, (384, 576)), (480, 640, (384, 512)),  # larger: the short side to 384
    (300, 500, (224, 384)), (64, 64, (384, 384)),  # smaller: the long side (its scale is nearer 1)
    (400, 300, (384, 288)),  # 384/400 is nearer 1 than 384/300
])
def test_the_resize_keeps_the_aspect_ratio_with_the_scale_nearest_one(height, width, expected):
    assert midas_size(height, width) == expected


def test_midas_names_a_bad_input_shape():
    with torch.device("meta"):
        model = MiDaS(MiDaSConfig())
    with pytest.raises(ValueError, match=r"H and W multiples of 32; got shape \(1, 3, 100, 384\)"):
        model(torch.zeros(1, 3, 100, 384, device="meta"))
