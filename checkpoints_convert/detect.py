"""Which variant a checkpoint is, by rules a reader can check, in this order:

1. an explicit `variant=` argument always wins (the caller handles it);
2. a same-named `.yaml` beside the checkpoint (the original config format): its UNet input
   channels, context width, class count and `parameterization`;
3. the weights: the cross-attention context width (768: v1, 1024: v2, 96: the demo model), the UNet's input channels
   (4, 5 depth, 9 inpainting, 7 upscaler) and the upscaler's class-embedding key;
4. eps or v for a v2 base model, whose keys are identical: run the UNet once on constant inputs
   (latent 0.5, context 0.5, t=999) and read v-prediction when mean(out - x) < -1 (the rule of
   stable-diffusion.cpp and AUTOMATIC1111). This reads what a TRAINED model does; on random weights
   it decides nothing meaningful, so pass `variant=` or a yaml for those.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
CROSS_ATTENTION_KEY = re.compile(r"model\.diffusion_model\..*\.attn2\.to_k\.weight")
UPSCALER_KEY = "model.diffusion_model.label_emb.weight"

BY_IN_CHANNELS = {4: "v2", 5: "v2-depth", 9: "v2-inpainting", 7: "x4-upscaler"}


class VariantError(ValueError):
    """The variant cannot be told; the message says what was found and what to pass."""


def variant_from_weights(shapes: dict[str, tuple[int, ...]], path: Path) -> tuple[str, str]:
    """(variant, the rule that decided) from the UNet's key shapes. v2 base means "eps or v"."""
    if UNET_IN not in shapes:
        raise VariantError(f"{path}: no UNet weights ({UNET_IN} is missing): not a Stable Diffusion checkpoint")
    in_channels = shapes[UNET_IN][1]
    if UPSCALER_KEY in shapes:
        return "x4-upscaler", f"weights: class-embedding key {UPSCALER_KEY} present (noise-level labels)"
    context_keys = sorted(k for k in shapes if CROSS_ATTENTION_KEY.fullmatch(k))
    if not context_keys:
        raise VariantError(f"{path}: no cross-attention weights (model.diffusion_model.*.attn2.to_k.weight); pass variant=")
    context_dim = shapes[context_keys[0]][1]
    reason = f"weights: context width {context_dim}, UNet input channels {in_channels}"
    if context_dim == 768 and in_channels == 4:
        return "v1", reason
    if context_dim == 96 and in_channels == 4:
        return "demo", reason + " (the project's demo model)"
    if context_dim == 1024 and in_channels in BY_IN_CHANNELS:
        return BY_IN_CHANNELS[in_channels], reason
    raise VariantError(f"{path}: unknown combination ({reason}); pass variant= explicitly")


def variant_from_yaml(yaml_path: Path) -> tuple[str, str] | None:
    """The variant named by an original inference yaml, or None when it says too little.

    Only the few fields that tell the variants apart are read, with plain text matching (the
    original configs are simple, and a yaml library is not a dependency).
    """
    text = yaml_path.read_text()
    unet = _block(text, "unet_config")
    in_channels = _int_field(unet, "in_channels")
    context_dim = _int_field(unet, "context_dim")
    prediction = re.search(r"^\s*parameterization:\s*[\"']?(\w+)", text, re.MULTILINE)
    prediction = prediction.group(1) if prediction else "eps"
    reason = f"yaml {yaml_path.name}: in_channels {in_channels}, context_dim {context_dim}, parameterization {prediction}"
    if _int_field(unet, "num_classes") is not None:
        return "x4-upscaler", reason
    if context_dim == 768:
        return "v1", reason
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


def _int_field(text: str, name: str) -> int | None:
    found = re.search(rf"^\s*{name}:\s*(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else None
