"""DDIM sampling (Song, Meng & Ermon 2021), the loop of the original DDIMSampler written out.

One step from x_t to x_{t_prev} (DDIM eq. 12), with a = alpha_bar_t, a' = alpha_bar_{t_prev}:

    x0^    = (x_t - sqrt(1 - a) eps) / sqrt(a)                 "predicted x0"
    x_prev = sqrt(a') x0^ + sqrt(1 - a' - sigma^2) eps + sigma z,   z ~ N(0, I)

eta = 0 (sigma = 0) is the deterministic DDIM; eta = 1 recovers DDPM's ancestral variance.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .common import Callback, Model
from .prediction import eps_and_x0
from .schedule import DDIMCoefficients, NoiseSchedule, ddim_timesteps


def ddim_update(pred_x0: torch.Tensor, eps: torch.Tensor, a_prev: torch.Tensor, sigma: torch.Tensor,
                noise: torch.Tensor | None) -> torch.Tensor:
    """DDIM eq. 12: x_prev = sqrt(a') x0^ + sqrt(1 - a' - sigma^2) eps + sigma z."""
    x_prev = a_prev.sqrt() * pred_x0 + (1.0 - a_prev - sigma**2).sqrt() * eps
    return x_prev if noise is None else x_prev + sigma * noise


def step_scalars(coefficients: DDIMCoefficients, index: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """a_t, a_prev, sigma_t of step `index` as [1, 1, 1, 1] float32 tensors on x's device (as the original)."""
    return tuple(v[index].view(1, 1, 1, 1).to(x.device) for v in
                 (coefficients.alphas, coefficients.alphas_prev, coefficients.sigmas))


@torch.no_grad()
def sample_ddim(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str = "eps",
                eta: float = 0.0, generator: torch.Generator | list[torch.Generator] | None = None,
                x_0: torch.Tensor | None = None, t_enc: int | None = None,
                callback: Callback | None = None, progress: bool = True) -> torch.Tensor:
    """Run DDIM from x_T down to x_0. -> the final latent [B, C, H, W], in x_T's (scaled) space.

    eta: DDIM's sigma scale (eq. 16): 0 deterministic, 1 DDPM's ancestral variance.
    generator: draws the eta > 0 noise, one N(0, I) per step, on the CPU (same on every device);
        a list gives each batch element its own generator (so an image does not depend on its batch).
    x_0, t_enc: img2img, as the original scripts/img2img.py: x_0 noised with x_T to DDIM step t_enc
        (noise_to_step), then the last t_enc steps (the original's `decode`). t_enc without x_0:
        those steps from x_T itself (depth2img at strength 1.0).
    """
    coefficients = DDIMCoefficients.make(schedule, steps, eta)
    count, x = len(coefficients.timesteps), x_T
    if x_0 is not None:
        count, x = t_enc, noise_to_step(x_0, x_T, schedule, steps, t_enc)
    elif t_enc is not None:
        # From x_T itself, the last t_enc steps: the depth2img script's start at strength 1.0
        # (do_full_sample: pure noise, with t_enc capped at steps - 1, so one step fewer).
        count = t_enc
    batch = x.shape[0]
    for i, index in enumerate(tqdm(reversed(range(count)), total=count, desc="DDIM", disable=not progress)):
        t = int(coefficients.timesteps[index])
        t_batch = torch.full((batch,), t, device=x.device, dtype=torch.long)
        a_t, a_prev, sigma = step_scalars(coefficients, index, x)
        eps, pred_x0 = eps_and_x0(model(x, t_batch), x, t_batch, a_t, schedule, prediction)
        noise = None
        if eta > 0 and isinstance(generator, list):
            noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator]).to(x)
        elif eta > 0:
            noise = torch.randn(x.shape, generator=generator).to(x)
        x = ddim_update(pred_x0, eps, a_prev, sigma, noise)
        if callback is not None:
            callback(i, t, x, pred_x0)
    return x


def noise_to_step(x0: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule, steps: int, t_enc: int
                  ) -> torch.Tensor:
    """img2img's starting point (the original's `stochastic_encode`): x0 noised to DDIM step t_enc,

        z = sqrt(a) x0 + sqrt(1 - a) noise,   a = alpha_bar at DDIM step index t_enc,

    after which sample_ddim denoises from step index t_enc - 1. The original
    noises one DDIM step further than where it starts denoising; reproduced deliberately. With
    t_enc == steps (strength 1.0) there is no step t_enc, and the original fails with an index
    error; here the start is pure noise, and the whole schedule runs, as txt2img from that noise.
    """
    if t_enc == steps:
        return noise
    # The forward process q(x_t | x_0) at t = the DDIM timestep of index t_enc; the original takes
    # sqrt(a) and sqrt(1 - a) of the float32 alpha_bar, as q_sample does.
    t = ddim_timesteps(steps, schedule.num_timesteps)[t_enc]
    return schedule.q_sample(x0, t.expand(x0.shape[0]), noise)
