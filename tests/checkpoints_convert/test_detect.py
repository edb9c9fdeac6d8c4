"""Variant rules on their own: the yaml reader, the weight shapes, and the eps/v probe's rule."""

import os
import threading

import pytest
import torch

from checkpoints_convert.detect import (MAX_YAML_BYTES, VariantError, is_v_prediction, probe_v_prediction,
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
        (9, 768, "", "", "v1-inpainting"),  # v1-inpainting-inference.yaml (SD 1.5 inpainting)
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


def v2_v_yaml(blank: str = "") -> str:
    """The v2-v yaml, `blank` inserted before the top-level fields and before the UNet's."""
    text = YAML.format(target="LatentDiffusion", parameterization='    parameterization: "v"\n', num_classes="",
                       in_channels=4, context_dim=1024)
    text = text.replace("  params:\n", "  params:\n" + blank, 1)
    return text.replace("      params:\n", "      params:\n" + blank, 1)


def test_blank_lines_are_read_in_linear_time(tmp_path):
    """The fields were found with `^\\s*name:\\s*(\\d+)` (re.MULTILINE): `\\s*` crosses newlines, so
    every blank line restarted a scan over all the blank lines after it; 160 KB of them took 56 s.
    Here 2 x 400 KB (on the old code: many minutes); read line by line, it is milliseconds."""
    path = tmp_path / "model.yaml"
    path.write_text(v2_v_yaml(blank="\n" * 400_000))
    assert path.stat().st_size < MAX_YAML_BYTES
    variant, reason = variant_from_yaml(path)
    assert variant == "v2-v"
    assert reason == "yaml model.yaml: in_channels 4, context_dim 1024, parameterization 'v'"


def test_a_symlink_to_a_regular_yaml_is_followed(tmp_path):
    (tmp_path / "real.yaml").write_text(v2_v_yaml())
    (tmp_path / "model.yaml").symlink_to(tmp_path / "real.yaml")
    assert variant_from_yaml(tmp_path / "model.yaml")[0] == "v2-v"


def test_a_yaml_linked_to_a_device_is_refused_unread(tmp_path):
    """/dev/zero never ends: reading it whole filled the memory."""
    path = tmp_path / "model.yaml"
    path.symlink_to("/dev/zero")
    with pytest.raises(VariantError) as info:
        variant_from_yaml(path)
    assert str(info.value) == (f"{path}: not a regular file (a FIFO, a device or a directory); a config yaml "
                               "beside a checkpoint is read only from a regular file: remove it or pass variant=")


def test_a_fifo_yaml_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocked until a writer came: forever. Run in a thread, so that the
    old behaviour fails this test instead of hanging the suite; a writer is opened at the end to
    release a thread still blocked."""
    path = tmp_path / "model.yaml"
    os.mkfifo(path)
    outcome = []

    def read():
        try:
            outcome.append(variant_from_yaml(path))
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=5)
    blocked = thread.is_alive()
    if blocked:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # the reader's open returns, then reads EOF
        thread.join(timeout=5)
    assert not blocked, "variant_from_yaml blocked on a FIFO"
    assert len(outcome) == 1 and isinstance(outcome[0], VariantError)
    assert str(outcome[0]).startswith(f"{path}: not a regular file (a FIFO, a device or a directory)")


def test_an_oversize_yaml_is_refused_naming_the_cap(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(v2_v_yaml() + "#" * MAX_YAML_BYTES + "\n")
    with pytest.raises(VariantError) as info:
        variant_from_yaml(path)
    assert str(info.value) == (f"{path}: the config yaml is larger than 1048576 bytes, the most read (the "
                               "original inference yamls are about 2-3 KB); remove it or pass variant=")


def test_a_yaml_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(v2_v_yaml().encode() + b"# \xff\n")
    with pytest.raises(VariantError, match=r"model\.yaml: the config yaml is not UTF-8 text \(invalid start byte"):
        variant_from_yaml(path)


@pytest.mark.parametrize("value, shown", [
    ("9" * 5000, repr("9" * 40) + "..."),  # int() of over 4300 digits raised Python's own ValueError, naming nothing
    ("9" * 12 + "\x1b[31m red", repr("9" * 12 + "\x1b[31m red")),  # the file's text, escaped: no raw ESC
], ids=["5000 digits", "escape sequence"])
def test_a_number_too_long_for_a_count_is_named_and_escaped(tmp_path, value, shown):
    path = tmp_path / "model.yaml"
    path.write_text(v2_v_yaml().replace("in_channels: 4", f"in_channels: {value}"))
    with pytest.raises(VariantError) as info:
        variant_from_yaml(path)
    message = str(info.value)
    assert message == f"{path}: in_channels: {shown} is not a channel or class count"
    assert "\x1b" not in message


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
        (shapes(9, 768), "v1-inpainting"),
        (shapes(5, 1024), "v2-depth"), (shapes(7, 1024, upscaler=True), "x4-upscaler"),
    ],
)
def test_weight_rule(found, expected):
    assert variant_from_weights(found, "file.ckpt")[0] == expected


@pytest.mark.parametrize("found, words", [({}, "no UNet weights"), (shapes(6, 1024), "unknown combination"),
                                         (shapes(4, 640), "unknown combination"),
                                         (shapes(5, 768), "unknown combination")])
def test_weight_rule_refuses_what_it_cannot_tell(found, words):
    with pytest.raises(VariantError, match=words):
        variant_from_weights(found, "file.ckpt")


@pytest.mark.parametrize("key, shape, ndim", [
    (PREFIX + "input_blocks.0.0.weight", (320,), 4),  # the old code read shape[1]: IndexError
    (PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 1024, 1), 2),
], ids=["1-d UNet input", "3-d cross-attention"])
def test_weight_rule_refuses_a_weight_of_the_wrong_rank(key, shape, ndim):
    found = shapes(4, 1024) | {key: shape}
    with pytest.raises(VariantError) as info:
        variant_from_weights(found, "file.ckpt")
    assert str(info.value) == f"file.ckpt: {key!r} has shape {shape}; a {ndim}-d weight was expected"


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
