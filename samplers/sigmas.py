"""The discrete DDPM schedule seen in sigma space (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", EDM), as k-diffusion's DiscreteSchedule sees a CompVis model.

A VP latent x_t = sqrt(a) x_0 + sqrt(1 - a) eps (a = alpha_bar_t) divided by sqrt(a) is

    x = x_0 + sigma eps,   sigma_t = sqrt((1 - a) / a)                       (EDM table 1, "VP")

so the 1000 training timesteps are 1000 noise levels sigma_0 < ... < sigma_999. The samplers of
k-diffusion walk down a list of sigmas ending in 0; the network is asked at the timestep t of each
sigma, found by interpolating log-sigma linearly between the two nearest training timesteps (a
fractional t: the UNet's sinusoidal embedding takes any real t).

k-diffusion 0.1.1.post1, k_diffusion/external.py DiscreteSchedule and DiscreteEpsDDPMDenoiser;
everything in float32, as there (the model's alphas_cumprod buffer is float32).
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule

# Karras et al. 2022 eq. 5: rho = 7 "performs well" for their and our (VP) models.
KARRAS_RHO = 7.0


def model_sigmas(schedule: NoiseSchedule) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for t = 0..T-1 -> [T] float32, ascending."""
    alphas_cumprod = schedule.alphas_cumprod_f32
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def sigma_to_t(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """The (fractional) timestep of each sigma: log-sigma interpolated linearly between the two
    training timesteps around it (DiscreteSchedule.sigma_to_t, quantize=False). sigma: [B] -> [B]."""
    log_sigma = sigma.log()
    distances = log_sigma - log_sigmas[:, None]  # [T, B]
    # The last training timestep at or below sigma (the highest index with distance >= 0).
    low = distances.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0, 1)
    return ((1 - w) * low + w * high).view(sigma.shape)


def t_to_sigma(t: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """The inverse: sigma at a fractional timestep, log-sigma interpolated (DiscreteSchedule.t_to_sigma)."""
    t = t.float()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def discrete_sigmas(schedule: NoiseSchedule, n: int) -> torch.Tensor:
    """k-diffusion's default: n sigmas at timesteps evenly spaced from T-1 down to 0, then 0.

    DiscreteSchedule.get_sigmas(n): t = linspace(T-1, 0, n), sigma = t_to_sigma(t). -> [n + 1]"""
    log_sigmas = model_sigmas(schedule).log()
    t = torch.linspace(schedule.num_timesteps - 1, 0, n)
    return torch.cat([t_to_sigma(t, log_sigmas), torch.zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    then 0 (k-diffusion get_sigmas_karras). Steps crowd at low noise, where detail is decided. -> [n + 1]"""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, torch.zeros(1)])


def sigmas_for(schedule: NoiseSchedule, steps: int, karras: bool) -> torch.Tensor:
    """The sigmas a k-sampler walks: `steps` noise levels, then 0. Karras's run between the model's
    own lowest and highest sigma, taken as Python floats (as AUTOMATIC1111 passes them). -> [steps + 1]"""
    if not karras:
        return discrete_sigmas(schedule, steps)
    sigmas = model_sigmas(schedule)
    return karras_sigmas(steps, sigmas[0].item(), sigmas[-1].item())
