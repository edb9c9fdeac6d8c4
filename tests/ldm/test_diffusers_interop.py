"""Our UNet and VAE against diffusers (0.42, the ecosystem peer), from the same original weights.

Reference: `run_original` builds the ORIGINAL module with every tensor randomised and hands back its
state dict in the original key layout. Diffusers' own single-file conversion
(`diffusers.loaders.single_file_utils`: `create_*_diffusers_config_from_ldm` on the original yaml,
`convert_ldm_*_checkpoint` on the prefixed checkpoint) turns it into a diffusers model; our key table
turns it into ours. Both run the same inputs in float32 on CPU.
Measure: max|ours - diffusers| / max|diffusers|. Tolerance: 1e-5 (same operations up to summation
order; both use SDPA). Diffusers builds from configs only: no download is attempted, and a socket
guard below would fail the test if one were.
"""

from __future__ import annotations

import gc

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from diffusers.models.attention_processor import Attention

from checkpoints_convert.keymap.autoencoder import original_to_ours as autoencoder_original_to_ours
from checkpoints_convert.remap import load_state, rename_keys
from ldm.config import F8_AUTOENCODER, PRESETS
from ldm.modules.autoencoder import AutoencoderKL
from tests.ldm.test_unet import BATCH, LATENT_H, LATENT_W, make_inputs, unet_from_original_state
from tests.reference.original_configs import FIRST_STAGE_PARAMS as ORIGINAL_AUTOENCODER_PARAMS
from tests.reference.original_configs import UNET_PARAMS as ORIGINAL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original

TOLERANCE = 1e-5
UNET_PREFIX = "model.diffusion_model."  # where the UNet sits in an original checkpoint
VAE_PREFIX = "first_stage_model."


# Everything is local: any connection attempt fails loudly (tests/conftest.py). Full-size UNets
# and a full-width VAE against diffusers: slow.
pytestmark = [pytest.mark.usefixtures("offline"), pytest.mark.slow]


def original_yaml(unet_params: dict) -> dict:
    """The original inference yaml, as the dict diffusers' config creators read (model.params...)."""
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "scale_factor": 0.18215,
                "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                                "params": unet_params},
                "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL",
                                       "params": ORIGINAL_AUTOENCODER_PARAMS["f8"]},
            },
        }
    }


def to_diffusers(model_class, state: dict, prefix: str, yaml: dict, create_config, convert):
    """Original state -> diffusers model, through diffusers' own single-file conversion.

    -> (model, diffusers config, original keys the conversion dropped). The model's parameters are
    the converted tensors themselves (meta construction + assign), so no second copy is made.
    """
    checkpoint = {prefix + key: value for key, value in state.items()}
    config = create_config(yaml, checkpoint)
    converted = convert(checkpoint, config)
    # Which original tensors did the conversion carry over? (VAE attention weights become views.)
    assert len({t.data_ptr() for t in state.values()}) == len(state), "original tensors must not alias"
    carried = {t.data_ptr() for t in converted.values()}
    dropped = sorted(key for key, t in state.items() if t.data_ptr() not in carried)
    assert len(converted) == len(state) - len(dropped), "one original tensor went to two diffusers keys"
    with torch.device("meta"):
        model = model_class(**config)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval(), config, dropped


def attention_processors(model) -> set[str]:
    return {type(processor).__name__ for processor in model.attn_processors.values()}


@pytest.fixture(scope="module", params=["v1", "v2"])
def unet_outputs(request):
    """One preset: the original's weights through both conversions; -> outputs and findings.

    Only small tensors leave the fixture: the 3.4 GB state and both models are freed here.
    """
    preset = request.param
    config = PRESETS[preset].unet
    params = {"image_size": 32, **ORIGINAL_UNET_PARAMS[preset]}
    inputs = make_inputs(config, seed=len(preset))
    state, reference = run_original("unet", params, inputs, seed=1)

    theirs, diffusers_config, dropped = to_diffusers(
        UNet2DConditionModel, state, UNET_PREFIX, original_yaml(params),
        create_unet_diffusers_config_from_ldm, convert_ldm_unet_checkpoint)
    ours = unet_from_original_state(config, state)
    with torch.no_grad():
        out_ours = ours(inputs["x"], inputs["t"], inputs["context"])
        out_theirs = theirs(inputs["x"], inputs["t"], encoder_hidden_states=inputs["context"]).sample
    result = {
        "preset": preset, "ours": out_ours, "diffusers": out_theirs, "original": reference["out"],
        "config": diffusers_config, "dropped": dropped, "processors": attention_processors(theirs),
        "upcast": {m.upcast_attention for m in theirs.modules() if isinstance(m, Attention)},
    }
    del state, theirs, ours
    gc.collect()
    return result


def test_unet_matches_diffusers(unet_outputs):
    preset, ours, theirs = unet_outputs["preset"], unet_outputs["ours"], unet_outputs["diffusers"]
    assert theirs.shape == ours.shape == (BATCH, 4, LATENT_H, LATENT_W)
    assert theirs.std() > 0.1, "the diffusers output is trivial: the test would prove nothing"
    error = relative_error(ours, theirs)
    original = relative_error(theirs, unet_outputs["original"])
    print(f"unet {preset} {LATENT_H}x{LATENT_W} fp32: ours vs diffusers {error:.2e}, "
          f"diffusers vs original {original:.2e}")
    assert error <= TOLERANCE
    assert original <= TOLERANCE


def test_unet_conversion_is_complete_and_uses_sdpa(unet_outputs):
    config = unet_outputs["config"]
    print(f"unet {unet_outputs['preset']}: diffusers attention_head_dim={config['attention_head_dim']} "
          f"use_linear_projection={config['use_linear_projection']} processors={unet_outputs['processors']} "
          f"dropped={unet_outputs['dropped']}")
    assert unet_outputs["dropped"] == [], "diffusers' conversion dropped original keys"
    assert unet_outputs["processors"] == {"AttnProcessor2_0"}
    assert unet_outputs["upcast"] == {False}  # no fp32 upcast of q, k (immaterial in fp32, but the same math)
    if unet_outputs["preset"] == "v2":
        # diffusers' "attention_head_dim" is the head COUNT here: 320*mult / 64 channels per head.
        assert config["attention_head_dim"] == [5, 10, 20, 20] and config["use_linear_projection"]
    else:
        assert config["attention_head_dim"] == 8 and not config["use_linear_projection"]


@pytest.fixture(scope="module")
def vae_outputs():
    generator = torch.Generator().manual_seed(1234)
    inputs = {
        "image": torch.rand(2, 3, 64, 96, generator=generator) * 2 - 1,  # latents 8 x 12
        "z": torch.randn(2, 4, 8, 12, generator=generator),
    }
    state, reference = run_original("autoencoder", ORIGINAL_AUTOENCODER_PARAMS["f8"], inputs, seed=0)
    theirs, diffusers_config, dropped = to_diffusers(
        DiffusersAutoencoderKL, state, VAE_PREFIX, original_yaml(ORIGINAL_UNET_PARAMS["v1"]),
        create_vae_diffusers_config_from_ldm, convert_ldm_vae_checkpoint)
    ours = AutoencoderKL(F8_AUTOENCODER).eval()
    load_state(ours, rename_keys(state, autoencoder_original_to_ours(F8_AUTOENCODER), "autoencoder"), "autoencoder")
    with torch.no_grad():
        posterior_ours = ours.encode(inputs["image"])
        posterior_theirs = theirs.encode(inputs["image"]).latent_dist
        result = {
            "ours": {"mean": posterior_ours.mean, "logvar": posterior_ours.logvar,
                     "decoded": ours.decode(inputs["z"])},
            "diffusers": {"mean": posterior_theirs.mean, "logvar": posterior_theirs.logvar,
                          "decoded": theirs.decode(inputs["z"]).sample},
            "original": reference, "config": diffusers_config, "dropped": dropped,
            "processors": attention_processors(theirs),
        }
    return result


@pytest.mark.parametrize("output", ["mean", "logvar", "decoded"])
def test_vae_matches_diffusers(vae_outputs, output):
    ours, theirs = vae_outputs["ours"][output], vae_outputs["diffusers"][output]
    assert theirs.shape == ours.shape
    assert theirs.std() > 0.1, f"the diffusers {output} is trivial: the test would prove nothing"
    error = relative_error(ours, theirs)
    original = relative_error(theirs, vae_outputs["original"][output])
    print(f"vae f8 {output}: ours vs diffusers {error:.2e}, diffusers vs original {original:.2e}")
    assert error <= TOLERANCE
    assert original <= TOLERANCE


def test_vae_conversion_is_complete_and_uses_sdpa(vae_outputs):
    print(f"vae f8: processors={vae_outputs['processors']} dropped={vae_outputs['dropped']}")
    assert vae_outputs["dropped"] == []
    assert vae_outputs["processors"] == {"AttnProcessor2_0"}
    assert vae_outputs["config"]["scaling_factor"] == 0.18215
