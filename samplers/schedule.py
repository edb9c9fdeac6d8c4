"""The DDPM noise schedule (Ho et al. 2020) and the DDIM sub-sequence of it, as the original builds them.

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
    # Always on the CPU (also when a model is being built on the meta device): it is a small table.
    return torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64, device="cpu") ** 2


@dataclass(frozen=True)
class NoiseSchedule:
    """betas and alpha_bar (`alphas_cumprod`) over t = 0..T-1, computed in float64."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def linear(cls, num_timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012) -> NoiseSchedule:
        betas = linear_betas(num_timesteps, linear_start, linear_end)
        return cls(betas, torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod_f32(self) -> torch.Tensor:
        """alpha_bar as the original's samplers read it: computed in float64, then stored as a
        float32 buffer (ddpm.py register_schedule). Every sampler coefficient starts from this."""
        return self.alphas_cumprod.float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps  (DDPM eq. 4, reparameterised)."""
        a = self.alphas_cumprod_f32.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt().to(x0.dtype) * x0 + (1 - a).sqrt().to(x0.dtype) * noise


def ddim_timesteps(num_steps: int, num_timesteps: int = 1000) -> torch.Tensor:
    """The original's "uniform" DDIM discretisation: every c-th step, c = T // steps, PLUS ONE.

    The original adds 1 ("to get the final alpha values right"): for 50 steps the sampler visits
    t = 981, 961, ..., 21, 1, not 980, ..., 0. Reproduced deliberately, with the original's
    consequences: when c does not divide T the sampler takes more steps than asked (7 -> 8), and
    where the original would index t = T and fail (3, 9, 27, 37 steps, or more than 500), that one
    timestep is left out here. -> [n] long, ascending.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"steps={num_steps} must be between 1 and {num_timesteps}")
    stride = num_timesteps // num_steps
    timesteps = torch.arange(0, num_timesteps, stride, dtype=torch.long) + 1
    return timesteps[timesteps < num_timesteps]


@dataclass(frozen=True)
class DDIMCoefficients:
    """Per DDIM step i (ascending with the timesteps): alpha_bar_t, alpha_bar_prev, sigma_t. float32."""

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor

    @classmethod
    def make(cls, schedule: NoiseSchedule, num_steps: int, eta: float) -> DDIMCoefficients:
        timesteps = ddim_timesteps(num_steps, schedule.num_timesteps)
        alphas_cumprod = schedule.alphas_cumprod_f32
        alphas = alphas_cumprod[timesteps]
        # The step before the first visited timestep uses alpha_bar_0, not 1 (the original's choice).
        alphas_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[timesteps[:-1]]])
        # DDIM (Song et al. 2021) eq. 16: sigma_t = eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev).
        # The original evaluates it in float64 numpy on the float32 alphas, then stores float32.
        a, a_prev = alphas.double(), alphas_prev.double()
        sigmas = (eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()).float()
        return cls(timesteps, alphas, alphas_prev, sigmas)
