"""Euler, Euler ancestral and Heun over the probability-flow ODE in sigma space (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", EDM):

    dx/dsigma = (x - D(x, sigma)) / sigma                                             (EDM eq. 3)

Euler takes one derivative per step (EDM algorithm 1 with Euler's step); Heun corrects it with the
derivative at the step's end (EDM algorithm 1, second order, 2 model calls per step but the last);
Euler ancestral steps down to sigma_down and adds fresh noise up to sigma_next (sigma_space.py).
The loops of k-diffusion 0.1.1.post1's sample_euler, sample_euler_ancestral and sample_heun, with
their "churn" (EDM algorithm 2's extra noise) left at its default, off.
"""

from __future__ import annotations

import torch

from .sigma_space import Denoise, Noise, SigmaCallback, ancestral_step, steps_of, to_d


@torch.no_grad()
def euler(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, callback: SigmaCallback | None = None,
          progress: bool = True) -> torch.Tensor:
    """Euler's method: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i, d_i = (x_i - D(x_i, sigma_i)) / sigma_i."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "Euler", progress):
        denoised = denoise(x, sigmas[i] * ones)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def euler_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0,
                    noise: Noise, callback: SigmaCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Euler down to sigma_down, then fresh noise of std sigma_up (none after the last step)."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "Euler a", progress):
        denoised = denoise(x, sigmas[i] * ones)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def heun(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, callback: SigmaCallback | None = None,
         progress: bool = True) -> torch.Tensor:
    """Heun's method (EDM algorithm 1): an Euler step to x', then the average of the derivatives at
    x and x'. The last step, to sigma = 0 where d is undefined, stays Euler."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "Heun", progress):
        denoised = denoise(x, sigmas[i] * ones)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_euler = x + d * dt
            d_end = to_d(x_euler, sigmas[i + 1], denoise(x_euler, sigmas[i + 1] * ones))
            x = x + (d + d_end) / 2 * dt
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x
