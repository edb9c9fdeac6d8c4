"""A toy sampler, the way a new sampler is added: one function with the registry's signature
(samplers/common.py), then one entry in samplers.SAMPLERS. The tests register it at run time."""

from __future__ import annotations

import torch

from samplers.prediction import eps_and_x0


@torch.no_grad()
def sample_one_step(model, x_T, schedule, steps, *, prediction="eps", callback=None, progress=True):
    """x0 predicted from x_T in one model call at the last timestep (DDPM eq. 4 solved for x0):
    a crude sampler, but a real one. It takes none of the options (eta, generator, karras, x_0, t_enc)."""
    t = torch.full((x_T.shape[0],), schedule.num_timesteps - 1, dtype=torch.long, device=x_T.device)
    a_t = schedule.alphas_cumprod_f32.to(x_T.device)[t].view(-1, 1, 1, 1)
    _, x0 = eps_and_x0(model(x_T, t), x_T, t, a_t, schedule, prediction)
    if callback is not None:
        callback(0, int(t[0]), x0, x0)
    return x0


def register() -> None:
    """What the one registry line does, done at run time: SAMPLERS["one_step"] = sample_one_step."""
    import samplers

    samplers.SAMPLERS["one_step"] = sample_one_step
