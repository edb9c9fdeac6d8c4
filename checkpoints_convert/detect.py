"""Which variant a checkpoint is, by rules a reader can check, in this order:

1. an explicit `variant=` argument always wins (the caller handles it);
2. a same-named `.yaml` beside the checkpoint (the original config format): its UNet input
   channels, context width, class count and `parameterization`. The yaml is read only when it is
   a regular file (after symlinks) of at most MAX_YAML_BYTES; anything else there (a FIFO, a
   device, a huge file) is refused with an error naming it, since the user put it there;
3. the weights: the cross-attention context width (768: v1, 1024: v2, 96: the demo model), the UNet's input channels
   (4, 5 depth, 9 inpainting (v1 and v2), 7 upscaler) and the upscaler's class-embedding key;
4. eps or v for a v2 base model, whose keys are identical: run the UNet once on constant inputs
   (latent 0.5, context 0.5, t=999) and read v-prediction when mean(out - x) < -1 (the rule of
   stable-diffusion.cpp and AUTOMATIC1111). This reads what a TRAINED model does; on random weights
   it decides nothing meaningful, so pass `variant=` or a yaml for those.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import torch

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
CROSS_ATTENTION_KEY = re.compile(r"model\.diffusion_model\..*\.attn2\.to_k\.weight")
UPSCALER_KEY = "model.diffusion_model.label_emb.weight"

BY_IN_CHANNELS = {4: "v2", 5: "v2-depth", 9: "v2-inpainting", 7: "x4-upscaler"}  # context width 1024
V1_BY_IN_CHANNELS = {4: "v1", 9: "v1-inpainting"}  # context width 768

MAX_YAML_BYTES = 1024 * 1024  # the original inference yamls are 2-3 KB
MAX_YAML_DIGITS = 9  # a count of channels or classes; also keeps int() far below its 4300-digit limit


class VariantError(ValueError):
    """The variant cannot be told; the message says what was found and what to pass."""


def variant_from_weights(shapes: dict[str, tuple[int, ...]], path: Path) -> tuple[str, str]:
    """(variant, the rule that decided) from the UNet's key shapes. v2 base means "eps or v"."""
    if UNET_IN not in shapes:
        raise VariantError(f"{path}: no UNet weights ({UNET_IN} is missing): not a Stable Diffusion checkpoint")
    in_channels = _dimension(shapes, UNET_IN, 4, path)  # conv weight [out, in, 3, 3]
    if UPSCALER_KEY in shapes:
        return "x4-upscaler", f"weights: class-embedding key {UPSCALER_KEY} present (noise-level labels)"
    context_keys = sorted(k for k in shapes if CROSS_ATTENTION_KEY.fullmatch(k))
    if not context_keys:
        raise VariantError(f"{path}: no cross-attention weights (model.diffusion_model.*.attn2.to_k.weight); "
                           "pass variant=")
    context_dim = _dimension(shapes, context_keys[0], 2, path)  # linear weight [inner, context]
    reason = f"weights: context width {context_dim}, UNet input channels {in_channels}"
    if context_dim == 768 and in_channels in V1_BY_IN_CHANNELS:
        return V1_BY_IN_CHANNELS[in_channels], reason
    if context_dim == 96 and in_channels == 4:
        return "demo", reason + " (the project's demo model)"
    if context_dim == 1024 and in_channels in BY_IN_CHANNELS:
        return BY_IN_CHANNELS[in_channels], reason
    raise VariantError(f"{path}: unknown combination ({reason}); pass variant= explicitly")


def variant_from_yaml(yaml_path: Path) -> tuple[str, str] | None:
    """The variant named by an original inference yaml, or None when it says too little.

    Only the few fields that tell the variants apart are read, line by line (the original configs
    are simple, and a yaml library is not a dependency). A value echoed in a message is repr()'d:
    it is the file's text, and may hold escape sequences or newlines.
    """
    yaml_path = Path(yaml_path)
    text = read_yaml_text(yaml_path)
    unet = _block(text, "unet_config")
    in_channels = _int_field(unet, "in_channels", yaml_path)
    context_dim = _int_field(unet, "context_dim", yaml_path)
    prediction = re.match(r"\w*", (_field(text, "parameterization") or "").strip("\"'")).group() or "eps"
    reason = (f"yaml {yaml_path.name}: in_channels {in_channels}, context_dim {context_dim}, "
              f"parameterization {prediction!r}")
    if _int_field(unet, "num_classes", yaml_path) is not None:
        return "x4-upscaler", reason
    if context_dim == 768 and in_channels in (None, *V1_BY_IN_CHANNELS):
        return V1_BY_IN_CHANNELS[in_channels or 4], reason
    if context_dim == 1024 and in_channels in BY_IN_CHANNELS:
        variant = BY_IN_CHANNELS[in_channels]
        return ("v2-v" if variant == "v2" and prediction == "v" else variant), reason
    return None


def is_v_prediction(mean_out_minus_x: float) -> bool:
    """The probe's rule: an eps-model returns about x at t=999 on a constant 0.5 latent (the noise
    dominates); a v-model returns v = sqrt(a)eps - sqrt(1-a)x0, well below x."""
    return mean_out_minus_x < -1.0


@torch.no_grad()
def probe_v_prediction(unet: torch.nn.Module, context_dim: int) -> tuple[bool, float]:
    """Run the UNet once on latent 0.5, context 0.5, t=999 (8x8 latent): (is v, mean(out - x))."""
    parameter = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=parameter.device, dtype=parameter.dtype)
    context = torch.full((1, 77, context_dim), 0.5, device=parameter.device, dtype=parameter.dtype)
    out = unet(x, torch.tensor([999], device=parameter.device), context)
    score = (out.float() - x.float()).mean().item()
    return is_v_prediction(score), score


def read_yaml_text(yaml_path: Path) -> str:
    """The text of a config yaml, read only from a regular file of at most MAX_YAML_BYTES.

    Checked before opening (a FIFO is never opened, a device never touched), and again on the open
    file (it may have been swapped in between): a FIFO would block the read forever, /dev/zero would
    fill the memory. O_NONBLOCK makes even a FIFO swapped in after the first check open at once.
    """
    try:
        if not stat.S_ISREG(os.stat(yaml_path).st_mode):  # os.stat follows symlinks
            raise VariantError(_not_regular(yaml_path))
        descriptor = os.open(yaml_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise VariantError(f"{yaml_path}: cannot read the config yaml ({error.strerror})") from None
    too_large = (f"{yaml_path}: the config yaml is larger than {MAX_YAML_BYTES} bytes, the most read "
                 "(the original inference yamls are about 2-3 KB); remove it or pass variant=")
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise VariantError(_not_regular(yaml_path))
        if info.st_size > MAX_YAML_BYTES:
            raise VariantError(too_large)
        data = file.read(MAX_YAML_BYTES + 1)  # a file still growing is cut off here
    if len(data) > MAX_YAML_BYTES:
        raise VariantError(too_large)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise VariantError(f"{yaml_path}: the config yaml is not UTF-8 text ({error.reason} at byte "
                           f"{error.start}); remove it or pass variant=") from None


def _not_regular(yaml_path: Path) -> str:
    return (f"{yaml_path}: not a regular file (a FIFO, a device or a directory); a config yaml beside a "
            "checkpoint is read only from a regular file: remove it or pass variant=")


def _dimension(shapes: dict[str, tuple[int, ...]], key: str, ndim: int, path: Path) -> int:
    """Dimension 1 (the input width) of the weight `key`, which must have `ndim` dimensions."""
    if len(shapes[key]) != ndim:
        raise VariantError(f"{path}: {key!r} has shape {tuple(shapes[key])}; a {ndim}-d weight was expected")
    return shapes[key][1]


def _block(text: str, name: str) -> str:
    """The lines indented under `name:` (one yaml mapping, by indentation)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{name}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            return "\n".join(body)
    return ""


def _field(text: str, name: str) -> str | None:
    """The value of the first `name: value` line, at any indentation, or None. Line by line: a
    pattern whose blanks may cross newlines (`^\\s*name:\\s*`) is quadratic in blank lines."""
    for line in text.splitlines():
        key, colon, value = line.strip().partition(":")
        if colon and key == name:
            return value.strip()
    return None


def _int_field(text: str, name: str, yaml_path: Path) -> int | None:
    """The leading digits of `name:`'s value as an int, or None when it has no leading digits."""
    value = _field(text, name)
    digits = re.match(r"[0-9]*", value or "").group()
    if len(digits) > MAX_YAML_DIGITS:
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        raise VariantError(f"{yaml_path}: {name}: {shown} is not a channel or class count")
    return int(digits) if digits else None
