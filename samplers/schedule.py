"""The DDPM noise schedule (Ho et al. 2020) as the original latent-diffusion code builds it.

Forward process, DDPM eq. 4:  q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
with alpha_t = 1 - beta_t and alpha_bar_t = prod_{s<=t} alpha_s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def linear_betas(num_timesteps: int, linear_start: float, linear_end: float) -> torch.Tensor:
    """The original's "linear" schedule: linear in sqrt(beta), then squared, in float64.

    betas = linspace(sqrt(b0), sqrt(b1), T) ** 2  (ldm make_beta_schedule; not DDPM's linear betas)
    """
    return torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64) ** 2


@dataclass(frozen=True)
class NoiseSchedule:
    """betas and alpha_bar (`alphas_cumprod`) over t = 0..T-1, float64."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def linear(cls, num_timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012) -> NoiseSchedule:
        betas = linear_betas(num_timesteps, linear_start, linear_end)
        return cls(betas, torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)
