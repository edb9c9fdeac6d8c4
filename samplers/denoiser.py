"""The network seen as a denoiser in sigma space: D(x, sigma) = the predicted x_0 (Karras et al. 2022,
EDM sec. 5 and table 1), as k-diffusion's CompVisDenoiser / CompVisVDenoiser wrap a CompVis model.

The network takes the VP latent x_t = x / sqrt(1 + sigma^2) (samplers/sigmas.py) at the timestep
t(sigma), and predicts eps or v there. With c_in = 1 / sqrt(sigma^2 + 1) (sigma_data = 1):

    eps-model:  D(x, sigma) = x - sigma * eps(c_in x, t)                        (x = x_0 + sigma eps)
    v-model:    D(x, sigma) = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v(c_in x, t)
                (c_skip x + c_out v, EDM table 1; v = sqrt(a) eps - sqrt(1-a) x_0 as in prediction.py)

k-diffusion 0.1.1.post1, k_diffusion/external.py DiscreteEpsDDPMDenoiser.forward and
DiscreteVDDPMDenoiser.forward.
"""

from __future__ import annotations

from typing import Callable

import torch

from .common import Model
from .guidance import Guided
from .schedule import NoiseSchedule
from .sigmas import model_sigmas, sigma_to_t

# denoise(x [B, C, H, W], sigma [B]) -> the predicted x_0 [B, C, H, W]
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def denoiser(model: Model, schedule: NoiseSchedule, prediction: str) -> Denoise:
    """D(x, sigma) of a (guided) eps- or v-model over `schedule`'s timesteps. A guided model
    (guidance.Guided) is guided on D, after the scalings, as k-diffusion's users do (its examples'
    and AUTOMATIC1111's CFGDenoiser): the same in exact arithmetic, and the same rounding as theirs."""
    log_sigmas = model_sigmas(schedule).log()

    def scaled(output: torch.Tensor, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """D from the network's output at x (EDM table 1 scalings)."""
        if prediction == "v":
            c_skip, c_out = 1 / (s**2 + 1), -s / (s**2 + 1) ** 0.5
            return output * c_out + x * c_skip
        return x + output * -s

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / (s**2 + 1) ** 0.5
        t = sigma_to_t(sigma, log_sigmas.to(sigma.device))
        if isinstance(model, Guided) and model.uncond is not None:
            out_uncond, out_cond = model.halves(x * c_in, t)
            return model.combine(scaled(out_uncond, x, s), scaled(out_cond, x, s))
        return scaled(model(x * c_in, t), x, s)

    return denoise
