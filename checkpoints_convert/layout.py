"""The original single-file layout: which prefix holds which network, and what else a file holds.

An original checkpoint is the state dict of the training code's LatentDiffusion module:

| prefix | what | our module |
| --- | --- | --- |
| `model.diffusion_model.` | the UNet | `unet` |
| `first_stage_model.` | the KL autoencoder | `vae` |
| `cond_stage_model.transformer.` | v1: HF CLIPTextModel (CLIP ViT-L/14 text) | `text_encoder` |
| `cond_stage_model.model.` | v2: open_clip CLIP without its visual tower | `text_encoder` |
| `model_ema.` | EMA copies of the UNet, dots removed from the names | `unet` with use_ema=True |
| `depth_model.model.` | the depth variant's MiDaS DPT-Hybrid (a file may lack it) | `depth_model` |

plus the noise schedule as buffers (recomputed from the config instead: fp16-pruned files store
them rounded), and, for the upscaler, `low_scale_model.` (its noise-augmentation schedule).
"""

from __future__ import annotations

from ldm.config import ModelConfig

from .keymap import autoencoder, clip_text, midas, openclip_text, unet

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPENCLIP_PREFIX = "cond_stage_model.model."
EMA_PREFIX = "model_ema."
DEPTH_PREFIX = "depth_model.model."

# The DDPM schedule buffers of the original LatentDiffusion (ddpm.py, register_schedule).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
# Keys a file may hold that carry no weight of the networks we run: listed, so that nothing
# unknown is ever dropped silently.
IGNORED_KEYS = frozenset(
    SCHEDULE_BUFFERS
    + ("scale_factor", "logvar", "model_ema.decay", "model_ema.num_updates")
    + tuple(f"low_scale_model.{name}" for name in SCHEDULE_BUFFERS[:8])  # the upscaler's own schedule
)
IGNORED_PREFIXES = (
    "first_stage_model.loss.",  # the autoencoder's training loss (LPIPS, discriminator) in some files
)


def is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def text_encoder_prefix(config: ModelConfig) -> str:
    return CLIP_PREFIX if config.text_encoder.kind == "clip" else OPENCLIP_PREFIX


def original_to_ours(config: ModelConfig, keys: set[str] | None = None) -> tuple[dict[str, str], frozenset[str]]:
    """(full original key -> our `StableDiffusion` state-dict key, keys of the networks to ignore:
    text-encoder and MiDaS tensors that are never run).

    `keys` (the file's keys) picks between the two v1 text-encoder namings.
    """
    table = {UNET_PREFIX + k: "unet." + v for k, v in unet.original_to_ours(config.unet).items()}
    table |= {VAE_PREFIX + k: "vae." + v for k, v in autoencoder.original_to_ours(config.autoencoder).items()}
    prefix = text_encoder_prefix(config)
    if config.text_encoder.kind == "clip":
        text_keys = {k[len(prefix):] for k in keys or () if k.startswith(prefix)}
        text_table, text_ignored = clip_text.select_table(config.text_encoder, text_keys or {"text_model."})
    else:
        text_table, text_ignored = openclip_text.original_to_ours(config.text_encoder), openclip_text.IGNORED
    table |= {prefix + k: "text_encoder." + v for k, v in text_table.items()}
    ignored = {prefix + k for k in text_ignored}
    if config.depth_model is not None:
        table |= {DEPTH_PREFIX + k: "depth_model." + v for k, v in midas.original_to_ours(config.depth_model).items()}
        ignored |= {DEPTH_PREFIX + k for k in midas.IGNORED}
    return table, frozenset(ignored)


def has_depth_model(keys) -> bool:
    """Whether a file carries MiDaS (a depth checkpoint may have been saved without it)."""
    return any(k.startswith(DEPTH_PREFIX) for k in keys)


def ema_key(original_unet_key: str) -> str:
    """The EMA copy's name: LitEma strips the dots from `diffusion_model.<key>`."""
    return EMA_PREFIX + ("diffusion_model." + original_unet_key[len(UNET_PREFIX):]).replace(".", "")


def ema_to_ours(config: ModelConfig) -> dict[str, str]:
    """`model_ema.*` key -> our UNet's key (the EMA weights replace the UNet's when use_ema=True)."""
    return {ema_key(UNET_PREFIX + k): "unet." + v for k, v in unet.original_to_ours(config.unet).items()}
