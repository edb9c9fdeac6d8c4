"""DPM2 and DPM2 ancestral: k-diffusion's second-order sampler "inspired by DPM-Solver-2 (Lu et al.
2022, "DPM-Solver", algorithm 1) and EDM's algorithm 2": the derivative is taken again at the
midpoint in log-sigma, and that one carries the whole step,

    sigma_mid = exp((log sigma_i + log sigma_{i+1}) / 2)
    x_mid     = x_i + (sigma_mid - sigma_i) d(x_i, sigma_i)
    x_{i+1}   = x_i + (sigma_{i+1} - sigma_i) d(x_mid, sigma_mid)

(2 model calls per step but the last, which is Euler's, to sigma = 0). The ancestral one steps to
sigma_down that way and then adds fresh noise of std sigma_up (sigma_space.ancestral_step).
k-diffusion 0.1.1.post1, sample_dpm_2 (churn off) and sample_dpm_2_ancestral.
"""

from __future__ import annotations

import torch

from .sigma_space import Denoise, Noise, SigmaCallback, ancestral_step, steps_of, to_d


def midpoint_step(denoise: Denoise, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
                  ) -> torch.Tensor:
    """DPM-Solver-2's step from sigma to sigma_next, with the derivative d at (x, sigma) given."""
    sigma_mid = sigma.log().lerp(sigma_next.log(), 0.5).exp()
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, denoise(x_mid, sigma_mid * x.new_ones([x.shape[0]])))
    return x + d_mid * (sigma_next - sigma)


@torch.no_grad()
def dpm_2(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, callback: SigmaCallback | None = None,
          progress: bool = True) -> torch.Tensor:
    """DPM2: the midpoint step of DPM-Solver-2 in log-sigma; Euler's step to sigma = 0."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "DPM2", progress):
        denoised = denoise(x, sigmas[i] * ones)
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            x = midpoint_step(denoise, x, d, sigmas[i], sigmas[i + 1])
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def dpm_2_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, noise: Noise,
                    callback: SigmaCallback | None = None, progress: bool = True) -> torch.Tensor:
    """DPM2 ancestral: DPM2's step down to sigma_down, then fresh noise of std sigma_up."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "DPM2 a", progress):
        denoised = denoise(x, sigmas[i] * ones)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = midpoint_step(denoise, x, d, sigmas[i], sigma_down)
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x

