"""From an original checkpoint file to our names, with every key accounted for.

`read_original(path, variant, use_ema)` reads the file safely, decides the variant, maps every
key through the tables, and refuses files with missing or unknown keys (listing them). It hands
back tensors under OUR names; ldm.pipeline builds the modules and loads them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ldm.config import PRESETS, ModelConfig

from . import layout
from .detect import variant_from_weights, variant_from_yaml
from .read import read_checkpoint
from .remap import list_keys

log = logging.getLogger("ldm")


@dataclass
class OriginalCheckpoint:
    config: ModelConfig
    state: dict[str, torch.Tensor]  # our StableDiffusion state-dict names
    reason: str  # which rule decided the variant
    needs_prediction_probe: bool  # a v2 base file without a hint: eps or v is still open
    tensors: dict[str, torch.Tensor]  # every tensor of the file, under the file's own names


def read_original(path: str | Path, variant: str | None = None, use_ema: bool = False) -> OriginalCheckpoint:
    path = Path(path)
    if variant is not None and variant not in PRESETS:
        raise ValueError(f"variant={variant!r} is not known; use one of {sorted(PRESETS)}")
    tensors = read_checkpoint(path)

    needs_probe = False
    if variant is not None:
        reason = f"explicit variant={variant!r}"
    elif path.with_suffix(".yaml").exists() and (found := variant_from_yaml(path.with_suffix(".yaml"))):
        variant, reason = found
    else:
        variant, reason = variant_from_weights({k: tuple(v.shape) for k, v in tensors.items()}, path)
        needs_probe = variant == "v2"
    config = PRESETS[variant]
    if "scale_factor" in tensors:
        # The original's LatentDiffusion(scale_by_std=True) keeps the latent scale it measured as a
        # buffer; when a file carries one, it is that model's scale, whatever the preset says.
        config = replace(config, scale_factor=scale_factor_of(tensors["scale_factor"], path))
    if config.depth_model is not None and not layout.has_depth_model(tensors):
        # A depth file without MiDaS's weights: it runs depth2img on a depth map the caller gives.
        config = replace(config, depth_model=None)
        log.info("%s: no MiDaS weights (%s*): depth2img will need a depth map", path.name, layout.DEPTH_PREFIX)
    log.info("%s: variant %s (%s)", path.name, variant, reason)

    table, ignored = layout.original_to_ours(config, set(tensors))
    ema_table = layout.ema_to_ours(config)
    has_ema = any(k in tensors for k in ema_table)
    if use_ema and not has_ema:
        raise KeyError(f"{path}: use_ema=True but the file holds no EMA weights (no {layout.EMA_PREFIX}* keys)")

    missing = [k for k in table if k not in tensors]
    if has_ema:
        missing += [k for k in ema_table if k not in tensors]
    unexpected = [k for k in tensors if k not in table and k not in ema_table
                  and k not in ignored and not layout.is_ignored(k)]
    if missing or unexpected:
        parts = [f"missing {list_keys(sorted(missing))}"] if missing else []
        parts += [f"unexpected {list_keys(sorted(unexpected))}"] if unexpected else []
        raise KeyError(f"{path}: does not match the {variant} layout: " + "; ".join(parts)
                       + ". If the variant is wrong, pass variant= explicitly.")

    state = {ours: tensors[original] for original, ours in table.items()}
    if use_ema:
        state |= {ours: tensors[ema] for ema, ours in ema_table.items()}
    return OriginalCheckpoint(config, state, reason, needs_probe, tensors)


def scale_factor_of(tensor: torch.Tensor, path: Path) -> float:
    """The file's latent scale: one finite float > 0. The decoder divides by it (z / scale_factor),
    so 0, a negative, inf or nan would turn every image black or to noise without an error."""
    if tensor.numel() != 1 or not tensor.is_floating_point():
        raise ValueError(f"{path}: key 'scale_factor' is a {tensor.dtype} tensor of shape {tuple(tensor.shape)}; "
                         "the latent scale must be one floating-point number")
    value = tensor.float().item()
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{path}: key 'scale_factor' holds {value!r}; the latent scale must be a finite number > 0 "
                         "(the decoder divides by it)")
    return value
