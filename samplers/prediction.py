"""What the network predicts, and the conversions between eps, v and x0 (v from Salimans & Ho 2022).

With x_t = sqrt(a) x_0 + sqrt(1-a) eps (a = alpha_bar_t), the v-target is
v = sqrt(a) eps - sqrt(1-a) x_0 (Progressive Distillation, sec. 4 / appendix D). Then
eps = sqrt(a) v + sqrt(1-a) x_t   and   x_0 = sqrt(a) x_t - sqrt(1-a) v,
and for an eps-model x_0 = (x_t - sqrt(1-a) eps) / sqrt(a) (DDPM eq. 4 solved for x_0).
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule


def _coefficients(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The original reads sqrt(alpha_bar) and sqrt(1 - alpha_bar) from buffers computed in float64
    # and stored as float32 (ddpm.py sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod).
    a = schedule.alphas_cumprod.to(like.device)[t]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return a.sqrt().float().view(shape), (1 - a).sqrt().float().view(shape)


def eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(a_t) v + sqrt(1 - a_t) x_t.  x_t, v: [B, C, H, W], t: [B] -> [B, C, H, W]"""
    sqrt_a, sqrt_one_minus_a = _coefficients(schedule, t, x_t)
    return (sqrt_a * v + sqrt_one_minus_a * x_t).to(x_t.dtype)


def x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x_0 = sqrt(a_t) x_t - sqrt(1 - a_t) v."""
    sqrt_a, sqrt_one_minus_a = _coefficients(schedule, t, x_t)
    return (sqrt_a * x_t - sqrt_one_minus_a * v).to(x_t.dtype)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), "the predicted x0" of DDIM eq. 12.

    a_t is the sampler's own alpha_bar of the step, a float32 tensor that broadcasts over x_t (the
    original's DDIM and PLMS take the square roots in float32 there, not from float64 buffers)."""
    return (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def v_from_eps_and_x0(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The training target of a v-model: v = sqrt(a_t) eps - sqrt(1 - a_t) x_0."""
    sqrt_a, sqrt_one_minus_a = _coefficients(schedule, t, x0)
    return (sqrt_a * eps - sqrt_one_minus_a * x0).to(x0.dtype)


def eps_and_x0(model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, a_t: torch.Tensor,
               schedule: NoiseSchedule, prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, predicted x0) from the network's output, for an eps- or v-model, as the original computes them."""
    if prediction == "v":
        return eps_from_v(schedule, x_t, t, model_output), x0_from_v(schedule, x_t, t, model_output)
    return model_output, x0_from_eps(x_t, model_output, a_t)
