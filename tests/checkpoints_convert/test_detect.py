"""Variant rules on their own: the yaml reader, the weight shapes, and the eps/v probe's rule."""

import pytest
import torch

from checkpoints_convert.detect import (VariantError, is_v_prediction, probe_v_prediction,
                                        variant_from_weights, variant_from_yaml)
from ldm.config import UNetConfig
from ldm.modules.unet import UNet

# The parts of the original inference yamls that the rules read, in their original shape and
# indentation (the first stage's in_channels: 3 must not be mistaken for the UNet's).
YAML = """model:
  target: ldm.models.diffusion.ddpm.{target}
  params:
{parameterization}    linear_start: 0.00085
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
{num_classes}        in_channels: {in_channels}
        out_channels: 4
        context_dim: {context_dim}
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        ddconfig:
          in_channels: 3
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
"""


@pytest.mark.parametrize(
    "in_channels, context_dim, parameterization, num_classes, expected",
    [
        (4, 768, "", "", "v1"),
        (4, 1024, "", "", "v2"),
        (4, 1024, '    parameterization: "v"\n', "", "v2-v"),
        (9, 1024, "", "", "v2-inpainting"),
        (5, 1024, "", "", "v2-depth"),
        (7, 1024, '    parameterization: "v"\n', "        num_classes: 1000\n", "x4-upscaler"),
    ],
)
def test_yaml_rule(tmp_path, in_channels, context_dim, parameterization, num_classes, expected):
    path = tmp_path / "model.yaml"
    path.write_text(YAML.format(target="LatentDiffusion", parameterization=parameterization, num_classes=num_classes,
                                in_channels=in_channels, context_dim=context_dim))
    variant, reason = variant_from_yaml(path)
    assert variant == expected
    assert "model.yaml" in reason


def test_yaml_that_says_too_little_is_not_used(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("model:\n  params:\n    unet_config:\n      params:\n        in_channels: 4\n")
    assert variant_from_yaml(path) is None


PREFIX = "model.diffusion_model."


def shapes(in_channels, context_dim, upscaler=False):
    found = {PREFIX + "input_blocks.0.0.weight": (320, in_channels, 3, 3)}
    if upscaler:
        found[PREFIX + "label_emb.weight"] = (1000, 1024)
    else:
        found[PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = (320, context_dim)
    return found


@pytest.mark.parametrize(
    "found, expected",
    [
        (shapes(4, 768), "v1"), (shapes(4, 1024), "v2"), (shapes(9, 1024), "v2-inpainting"),
        (shapes(5, 1024), "v2-depth"), (shapes(7, 1024, upscaler=True), "x4-upscaler"),
    ],
)
def test_weight_rule(found, expected):
    assert variant_from_weights(found, "file.ckpt")[0] == expected


@pytest.mark.parametrize("found, words", [({}, "no UNet weights"), (shapes(6, 1024), "unknown combination"),
                                         (shapes(4, 640), "unknown combination")])
def test_weight_rule_refuses_what_it_cannot_tell(found, words):
    with pytest.raises(VariantError, match=words):
        variant_from_weights(found, "file.ckpt")


def test_probe_rule_threshold():
    assert is_v_prediction(-1.5) and not is_v_prediction(-0.5) and not is_v_prediction(0.0)


@pytest.mark.parametrize("bias, expected_v", [(-3.0, True), (0.5, False)])
def test_probe_on_a_constructed_unet(bias, expected_v):
    """A UNet whose output layer is zeroed and biased returns that bias everywhere: with x = 0.5,
    bias -3 gives mean(out - x) = -3.5 (v), bias 0.5 gives 0 (eps)."""
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_heads=2,
                        context_dim=16, norm_groups=8)
    unet = UNet(config)
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(bias)
    is_v, score = probe_v_prediction(unet, context_dim=16)
    assert is_v == expected_v
    assert score == pytest.approx(bias - 0.5)
