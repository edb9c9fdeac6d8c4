"""PLMS: pseudo linear multi-step sampling (Liu et al. 2022, "Pseudo Numerical Methods for
Diffusion Models on Manifolds", PNDM), the loop of the original PLMSSampler written out.

Each step is a DDIM (eta = 0) update, but with eps replaced by a linear multistep (Adams-Bashforth)
combination of the current and previous eps (PNDM eq. 12):

    step 1:  pseudo improved Euler: eps' = (eps_t + eps(x_prev, t_next)) / 2   (a second model call)
    step 2:  eps' = (3 eps_t - eps_{t-1}) / 2
    step 3:  eps' = (23 eps_t - 16 eps_{t-1} + 5 eps_{t-2}) / 12
    step 4+: eps' = (55 eps_t - 59 eps_{t-1} + 37 eps_{t-2} - 9 eps_{t-3}) / 24

The original's first step (and its t_next, which on the last step repeats the last timestep) is
reproduced. The original PLMS treats a v-model's output as eps and so breaks on v-models; this
one converts v to eps first, so PLMS works for them too.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .common import Callback, Model
from .ddim import ddim_update, noise_to_step, step_scalars
from .prediction import eps_and_x0, x0_from_eps
from .schedule import DDIMCoefficients, NoiseSchedule


def multistep_eps(eps: torch.Tensor, previous: list[torch.Tensor]) -> torch.Tensor:
    """The Adams-Bashforth combination of eps with up to three previous ones (newest last)."""
    if len(previous) == 1:
        return (3 * eps - previous[-1]) / 2
    if len(previous) == 2:
        return (23 * eps - 16 * previous[-1] + 5 * previous[-2]) / 12
    return (55 * eps - 59 * previous[-1] + 37 * previous[-2] - 9 * previous[-3]) / 24


@torch.no_grad()
def sample_plms(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str = "eps",
                x_0: torch.Tensor | None = None, t_enc: int | None = None, callback: Callback | None = None,
                progress: bool = True) -> torch.Tensor:
    """Run PLMS from x_T down to x_0 -> the final latent [B, C, H, W]. It adds no noise (no eta).

    x_0, t_enc: img2img, which the original PLMSSampler does not offer: DDIM's start (x_0 noised
    with x_T to step t_enc, ddim.noise_to_step), then the last t_enc timesteps, the first of them
    with the pseudo improved Euler step, as PLMS starts from x_T."""
    coefficients = DDIMCoefficients.make(schedule, steps, eta=0.0)
    timesteps = coefficients.timesteps.flip(0).tolist()  # descending: the order they are visited
    x, batch = x_T, x_T.shape[0]
    if x_0 is not None:
        timesteps, x = timesteps[len(timesteps) - t_enc:], noise_to_step(x_0, x_T, schedule, steps, t_enc)
    previous: list[torch.Tensor] = []

    def eps_of(x_in: torch.Tensor, t: int, a_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_batch = torch.full((batch,), t, device=x_in.device, dtype=torch.long)
        return eps_and_x0(model(x_in, t_batch), x_in, t_batch, a_t, schedule, prediction)

    for i, t in enumerate(tqdm(timesteps, desc="PLMS", disable=not progress)):
        index = len(timesteps) - i - 1
        a_t, a_prev, sigma = step_scalars(coefficients, index, x)
        eps, _ = eps_of(x, t, a_t)
        if not previous:
            # Pseudo improved Euler: a DDIM step with eps, then eps at the next timestep there
            # (on the last step the original's t_next is the last timestep again).
            pred_x0 = x0_from_eps(x, eps, a_t)
            x_next = ddim_update(pred_x0, eps, a_prev, sigma, None)
            t_next = timesteps[min(i + 1, len(timesteps) - 1)]
            eps_next, _ = eps_of(x_next, t_next, a_prev)
            eps_prime = (eps + eps_next) / 2
        else:
            eps_prime = multistep_eps(eps, previous)
        pred_x0 = x0_from_eps(x, eps_prime, a_t)
        x = ddim_update(pred_x0, eps_prime, a_prev, sigma, None)
        previous = (previous + [eps])[-3:]
        if callback is not None:
            callback(i, t, x, pred_x0)
    return x
