"""Our AutoencoderKL against the original (stable-diffusion-sdkit 2.1.5's Encoder, Decoder,
quant convs and DiagonalGaussianDistribution), at both full-size presets, in float32.

Reference: `tests.reference.original_ldm.run_original("autoencoder", ...)` builds the original with
every tensor randomised (seed 0) and runs encode (-> mean, logvar, std) and decode on the inputs
below. Our model loads the same weights through the key table. Measure: max|ours - ref| / max|ref|.
Tolerance: 1e-5 (float32, same operations up to summation order and the SDPA kernel).
Small spatial sizes keep CI fast; widths and depths are the real ones.
"""

from __future__ import annotations

import pytest
import torch

from checkpoints_convert.keymap.autoencoder import original_to_ours
from checkpoints_convert.remap import load_state, rename_keys
from ldm.config import F8_AUTOENCODER, X4_UPSCALER
from ldm.modules.autoencoder import AutoencoderKL
from tests.reference.original_configs import FIRST_STAGE_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity

TOLERANCE = 1e-5
OUTPUTS = ("mean", "logvar", "std", "decoded")

# name -> (config, image size H x W); latents are (H/f) x (W/f). Batch 2 everywhere.
PRESETS = {
    "f8": (F8_AUTOENCODER, (64, 96)),  # latents 8 x 12
    "f4": (X4_UPSCALER.autoencoder, (32, 48)),  # latents 8 x 12
}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def case(request):
    """One reference run per preset: (config, inputs, original state dict, reference outputs, our model)."""
    config, (height, width) = PRESETS[request.param]
    f = config.downsampling_factor
    generator = torch.Generator().manual_seed(1234)
    inputs = {
        "image": torch.rand(2, config.in_channels, height, width, generator=generator) * 2 - 1,
        "z": torch.randn(2, config.embed_dim, height // f, width // f, generator=generator),
    }
    state, reference = run_original("autoencoder", FIRST_STAGE_PARAMS[request.param], inputs, seed=0)
    vae = AutoencoderKL(config).eval()
    load_state(vae, rename_keys(state, original_to_ours(config), "autoencoder"), "autoencoder")
    return config, inputs, state, reference, vae, request.param


@pytest.fixture(scope="module")
def ours(case):
    _, inputs, _, _, vae, _ = case
    with torch.no_grad():
        posterior = vae.encode(inputs["image"])
        decoded = vae.decode(inputs["z"])
    return {"mean": posterior.mean, "logvar": posterior.logvar, "std": posterior.std, "decoded": decoded}


@pytest.mark.slow  # full-width autoencoders through the original code
@pytest.mark.parametrize("output", OUTPUTS)
def test_matches_original(case, ours, output):
    config, inputs, _, reference, _, name = case
    expected = reference[output]
    assert expected.std() > 0.1, f"the reference {output} is near-constant; the test would prove nothing"
    assert ours[output].shape == expected.shape
    error = relative_error(ours[output], expected)
    print(f"channel_mult={config.channel_mult} {output}: relative error {error:.2e}")
    size = "x".join(map(str, inputs["image" if output != "decoded" else "z"].shape[2:]))
    record_parity("AutoencoderKL", "v1/v2 (f8)" if name == "f8" else "x4-upscaler (f4)",
                  f"{'image' if output != 'decoded' else 'latent'} {size}, batch 2",
                  "encode " + output if output != "decoded" else "decode", "original ldm", error, TOLERANCE)
    assert error <= TOLERANCE


@pytest.mark.slow  # full-width autoencoders through the original code
def test_shapes(case, ours):
    config, inputs, _, _, _, _ = case
    batch, _, height, width = inputs["image"].shape
    f = config.downsampling_factor
    assert ours["mean"].shape == (batch, config.embed_dim, height // f, width // f)
    assert ours["decoded"].shape == (batch, config.out_channels) + tuple(s * f for s in inputs["z"].shape[2:])


@pytest.mark.slow  # full-width autoencoders through the original code
def test_keymap_covers_both_sides_exactly(case):
    config, _, state, _, vae, _ = case
    table = original_to_ours(config)
    assert set(table) == set(state)
    assert set(table.values()) == set(vae.state_dict())
    assert len(set(table.values())) == len(table)  # one-to-one


def test_keymap_renumbers_decoder_levels():
    table = original_to_ours(F8_AUTOENCODER)
    # The original's up.3 runs first (lowest resolution); ours is numbered in run order.
    assert table["decoder.up.3.block.0.conv1.weight"] == "decoder.levels.0.res_blocks.0.conv1.weight"
    assert table["decoder.up.1.upsample.conv.weight"] == "decoder.levels.2.upsample.conv.weight"
    assert table["decoder.up.0.block.0.nin_shortcut.weight"] == "decoder.levels.3.res_blocks.0.shortcut.weight"
    assert table["encoder.mid.attn_1.proj_out.weight"] == "encoder.mid.attention.to_out.weight"
    assert table["quant_conv.weight"] == "moments_conv.weight"
    assert table["post_quant_conv.bias"] == "latent_conv.bias"


@pytest.mark.slow  # full-width autoencoders through the original code
def test_sample_is_mean_plus_std_times_seeded_noise(case):
    _, inputs, _, _, vae, _ = case
    with torch.no_grad():
        posterior = vae.encode(inputs["image"][:1])
    first = posterior.sample(torch.Generator().manual_seed(7))
    again = posterior.sample(torch.Generator().manual_seed(7))
    other = posterior.sample(torch.Generator().manual_seed(8))
    eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(first, posterior.mean + posterior.std * eps)
    assert torch.equal(posterior.mode(), posterior.mean)


def test_std_is_exp_half_clamped_logvar():
    from ldm.modules.autoencoder import DiagonalGaussian

    mean = torch.zeros(1, 2, 1, 3)
    logvar = torch.tensor([-100.0, -30.0, 0.0, 2.0, 20.0, 100.0]).reshape(1, 2, 1, 3)
    posterior = DiagonalGaussian(torch.cat([mean, logvar], dim=1))
    clamped = torch.tensor([-30.0, -30.0, 0.0, 2.0, 20.0, 20.0]).reshape(1, 2, 1, 3)
    assert torch.equal(posterior.logvar, clamped)
    assert torch.equal(posterior.std, torch.exp(0.5 * clamped))


@pytest.fixture(scope="module")
def untrained_f8():
    return AutoencoderKL(F8_AUTOENCODER)  # the checks run before any compute: weights do not matter


@pytest.mark.parametrize(
    "method, shape, expected",
    [
        ("encode", (3, 64, 64), "[B, 3, H, W]"),  # not 4-D
        ("encode", (1, 4, 64, 64), "[B, 3, H, W]"),  # wrong channel count
        ("encode", (1, 3, 60, 64), "multiples of 8"),  # H not divisible by f
        ("encode", (1, 3, 64, 36), "multiples of 8"),  # W not divisible by f
        ("decode", (4, 8, 8), "[B, 4, h, w]"),  # not 4-D
        ("decode", (1, 3, 8, 8), "[B, 4, h, w]"),  # wrong latent channels
    ],
)
def test_bad_inputs_name_expected_and_received_shape(untrained_f8, method, shape, expected):
    with pytest.raises(ValueError) as error:
        getattr(untrained_f8, method)(torch.zeros(shape))
    assert expected in str(error.value)
    assert str(shape) in str(error.value)


def test_f4_checks_divisibility_by_4():
    vae = AutoencoderKL(X4_UPSCALER.autoencoder)
    with pytest.raises(ValueError, match=r"multiples of 4.*\(1, 3, 30, 32\)"):
        vae.encode(torch.zeros(1, 3, 30, 32))
    assert vae.encode(torch.zeros(1, 3, 4, 8)).mean.shape == (1, 4, 1, 2)
