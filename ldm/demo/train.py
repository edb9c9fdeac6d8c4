"""Train the demo model: the autoencoder first, then the text encoder and UNet together (LDM's two stages).

    python -m ldm train-demo --out my-demo.safetensors          # the full run (~50 min on 2 CPU cores)
    python -m ldm train-demo --minutes 5 --out quick.safetensors

Stage 1 (LDM sec. 3.1): the KL autoencoder learns x -> z -> x' on shape images; loss = L1 + L2
reconstruction + a small KL(q(z|x) || N(0, I)) that keeps the latent space smooth and bounded.
Then scale_factor = 1 / std(z), measured on fresh images (the original's `scale_by_std`, LDM sec. 4.3.2),
so that the diffusion model sees unit-variance latents.

Stage 2 (LDM eq. 2 = DDPM's L_simple, eq. 14, on latents): with the autoencoder frozen,
    z_0 = scale_factor * z ~ q(z|x),  t ~ U{0..999},  eps ~ N(0, I),
    z_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps               (DDPM eq. 4)
    loss = || eps - eps_theta(z_t, t, tau_theta(caption)) ||^2
and the caption is replaced by "" 10% of the time, so that the same network also learns the
unconditional eps_theta(z_t, t, tau("")) that classifier-free guidance needs (Ho & Salimans 2022).

One change to the noise, "offset noise" (Guttenberg 2023, "Diffusion with offset noise"):
    eps = n + k * delta,   n ~ N(0, I) [B, C, h, w],   delta ~ N(0, I) [B, C, 1, 1],   k = 0.2
Why: SD's schedule keeps sqrt(alpha_bar_T) = 0.068 of the signal at t = T. On 16x16 latents the
mean of pure noise over each channel has a std of only 1/16, and the surviving signal's mean (mostly
the background colour) has a std of 0.052: comparable, so in training the mean of z_T tells the
model the background, and when sampling it reads the background from the random x_T instead of the
caption (measured on a model trained without it: giving x_T the true image's channel means put 24
of 24 backgrounds right, negating them 2 of 24; plain noise 13). With k = 0.2 the noise's channel
mean has a std of 0.21, four times the signal's, and the caption has to decide. The sampler is
unchanged: x_T ~ N(0, I) as in the original (docs/demo-model.md).
The text encoder tau_theta is trained from scratch with the UNet (the real SD keeps CLIP frozen;
CLIP is not available here, and 15 words need no pre-training).

The run is a pure function of the seed and the step counts (a constant learning rate after warm-up,
so a run cut short by --minutes is exactly the first steps of the full run). The weights saved are
the exponential moving averages of the trained ones (the original's `model_ema`, `use_ema`).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import DEMO, ModelConfig
from . import shapes


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 0
    batch_size: int = 32
    autoencoder_steps: int = 2000
    autoencoder_lr: float = 1e-3
    kl_weight: float = 1e-4  # on the per-element KL; reconstruction dominates
    denoiser_steps: int = 8000
    denoiser_lr: float = 5e-4
    warmup_steps: int = 100
    caption_dropout: float = 0.1  # the share of "" captions: the unconditional model for CFG
    offset_noise: float = 0.2  # std of the per-image, per-channel constant added to eps (see train_denoiser)
    ema_decay: float = 0.999
    threads: int = 2


def warmup(step: int, steps: int) -> float:
    """Learning-rate factor: linear warm-up over `steps`, then constant."""
    return min(1.0, (step + 1) / steps)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta (the original's LitEma)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One gradient step on `loss` at learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def training_steps(count: int, desc: str, deadline: float, progress: bool, losses: list[float]):
    """range(count) under a tqdm bar that shows the last loss; it stops at `deadline` (time.monotonic),
    but only after the first step: every stage takes at least one, whatever the --minutes cap."""
    bar = tqdm(range(count), desc=desc, disable=not progress)
    for step in bar:
        if step > 0 and time.monotonic() > deadline:
            break
        yield step
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()


def train_autoencoder(vae, config: TrainingConfig, generator: torch.Generator, deadline: float,
                      progress: bool = True) -> list[float]:
    """Stage 1. -> the loss of every step."""
    # Start nearly deterministic (log-variance bias -6: posterior std ~0.05), so the decoder sees the
    # encoder's signal from the first step rather than unit noise; the KL term then sets the variance.
    with torch.no_grad():
        vae.moments_conv.bias[vae.config.embed_dim:] = -6.0
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.autoencoder_lr)
    losses = []
    for step in training_steps(config.autoencoder_steps, "autoencoder", deadline, progress, losses):
        images, _ = shapes.sample_batch(generator, config.batch_size)
        posterior = vae.encode(images)
        reconstruction = vae.decode(posterior.sample(generator))
        error = reconstruction - images
        kl = 0.5 * (posterior.mean**2 + posterior.std**2 - 1 - posterior.logvar).mean()
        loss = error.abs().mean() + error.pow(2).mean() + config.kl_weight * kl
        descend(optimizer, loss, config.autoencoder_lr * warmup(step, config.warmup_steps))
        losses.append(loss.item())
    return losses


@torch.no_grad()
def measure_scale_factor(vae, generator: torch.Generator, n: int = 512) -> float:
    """1 / std of latents z ~ q(z|x) of fresh images (the original's scale_by_std, on its first batch)."""
    images, _ = shapes.sample_batch(generator, n)
    return 1.0 / vae.encode(images).sample(generator).std().item()


def train_denoiser(unet, text_encoder, vae, tokenizer, schedule, scale_factor: float, config: TrainingConfig,
                   generator: torch.Generator, deadline: float, progress: bool = True):
    """Stage 2. -> (EMA unet, EMA text encoder, the loss of every step)."""
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.denoiser_lr)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    token_ids = {}  # caption -> ids; there are only 152 distinct captions (with "")
    losses = []
    for step in training_steps(config.denoiser_steps, "text encoder + unet", deadline, progress, losses):
        images, captions = shapes.sample_batch(generator, config.batch_size)
        dropped = torch.rand(len(captions), generator=generator) < config.caption_dropout
        captions = ["" if drop else c for c, drop in zip(captions, dropped.tolist())]
        for c in captions:
            if c not in token_ids:
                token_ids[c] = tokenizer(c)[0]
        ids = torch.stack([token_ids[c] for c in captions])
        with torch.no_grad():
            z_0 = scale_factor * vae.encode(images).sample(generator)
        t = torch.randint(schedule.num_timesteps, (len(captions),), generator=generator)
        eps = torch.randn(z_0.shape, generator=generator)
        if config.offset_noise:  # offset noise (module doc): one random constant per channel of each image
            eps = eps + config.offset_noise * torch.randn(*z_0.shape[:2], 1, 1, generator=generator)
        z_t = schedule.q_sample(z_0, t, eps)  # DDPM eq. 4
        loss = F.mse_loss(unet(z_t, t, text_encoder(ids)), eps)  # DDPM eq. 14, L_simple
        descend(optimizer, loss, config.denoiser_lr * warmup(step, config.warmup_steps))
        update_ema(ema_unet, unet, config.ema_decay)
        update_ema(ema_text, text_encoder, config.ema_decay)
        losses.append(loss.item())
    return ema_unet, ema_text, losses


def mean_of_last(losses: list[float], n: int = 200) -> float:
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def train_demo(out: str | Path, config: TrainingConfig = TrainingConfig(), minutes: float | None = None,
               model_config: ModelConfig = DEMO, progress: bool = True) -> dict:
    """Train both stages and write the model to `out` (original layout, float16 safetensors).
    `minutes` caps the wall time: the autoencoder gets a fifth of it, the rest goes to stage 2.
    -> the training record (also stored in the file's metadata)."""
    from ..pipeline import StableDiffusion  # here: the pipeline imports nothing of the demo

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out} exists; choose another name (files are never overwritten)")
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the demo model is written as .safetensors")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)  # the initial weights
        model = StableDiffusion(model_config)
        generator = torch.Generator().manual_seed(config.seed)  # every random draw of the data and noise
        start = time.monotonic()
        budget = float("inf") if minutes is None else 60 * minutes

        model.vae.train()
        autoencoder_losses = train_autoencoder(model.vae, config, generator, start + budget / 5, progress)
        model.vae.eval().requires_grad_(False)
        scale_factor = measure_scale_factor(model.vae, generator)

        model.unet.train(), model.text_encoder.train()
        unet, text_encoder, denoiser_losses = train_denoiser(
            model.unet, model.text_encoder, model.vae, model.tokenizer, model.schedule, scale_factor, config,
            generator, start + budget, progress)
        model.unet, model.text_encoder = unet.eval(), text_encoder.eval()
        model._set_config(replace(model_config, scale_factor=scale_factor))
        wall = time.monotonic() - start

        record = {
            "training": asdict(config), "minutes_cap": minutes, "wall_seconds": round(wall, 1),
            "autoencoder_steps_done": len(autoencoder_losses), "denoiser_steps_done": len(denoiser_losses),
            "autoencoder_final_loss": round(mean_of_last(autoencoder_losses), 5),
            "denoiser_final_loss": round(mean_of_last(denoiser_losses), 5),
            "scale_factor": scale_factor, "torch": torch.__version__,
        }
        model.half().save_checkpoint(out, metadata={"ldm_demo_training": json.dumps(record)})
        return record
    finally:
        torch.set_num_threads(previous_threads)
