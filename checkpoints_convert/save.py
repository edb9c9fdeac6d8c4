"""Write our weights back in the ORIGINAL single-file layout, loadable by the original code.

The keys are the inverse of the load tables (v1 text encoder with the `text_model.` level), plus
the schedule buffers the original LatentDiffusion registers (float32, computed the original way in
float64 first), so the original's `load_state_dict` finds what it expects.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ldm.config import PRESETS, ModelConfig
from samplers.schedule import NoiseSchedule

from . import layout


def schedule_buffers(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The DDPM buffers of the original `register_schedule` (ddpm.py), v_posterior = 0."""
    s = config.schedule
    schedule = NoiseSchedule.linear(s.num_timesteps, s.linear_start, s.linear_end)
    betas, alphas_cumprod = schedule.betas, schedule.alphas_cumprod
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


def to_original(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our `StableDiffusion` state dict -> the original checkpoint's keys (plus schedule buffers)."""
    table, _ = layout.original_to_ours(config)
    ours_to_original = {ours: original for original, ours in table.items()}
    missing = [k for k in ours_to_original if k not in state]
    extra = [k for k in state if k not in ours_to_original]
    if missing or extra:
        raise KeyError(f"cannot write the {config.name} layout: missing {missing[:10]}, unknown {extra[:10]}")
    original = {ours_to_original[k]: v.detach().contiguous() for k, v in state.items()}
    if config.scale_factor != PRESETS[config.name].scale_factor:
        # A latent scale the preset does not know (a re-trained demo model): stored the way the
        # original's LatentDiffusion(scale_by_std=True) stores it, as the `scale_factor` buffer.
        original["scale_factor"] = torch.tensor(config.scale_factor, dtype=torch.float32)
    return original | schedule_buffers(config)


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """`.safetensors` -> safetensors; `.ckpt` / `.pt` / `.pth` -> torch zip pickle {"state_dict": ...}.
    An existing file is never overwritten. `metadata` (str -> str) goes into the safetensors header."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another name (files are never overwritten)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} is not a folder")
    tensors = {k: v.cpu() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, str(path), metadata=metadata)
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        torch.save({"state_dict": tensors} | ({"metadata": metadata} if metadata else {}), path)
    else:
        raise ValueError(f"{path}: unknown checkpoint extension {path.suffix!r}; use .safetensors or .ckpt")
    return path
