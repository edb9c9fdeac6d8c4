"""What k-diffusion's samplers share, and the registry's signature around them.

Each sampler of euler.py, dpm2.py, lms.py and dpmpp.py is a loop over a denoiser D(x, sigma)
(denoiser.py) and a list of sigmas ending in 0 (sigmas.py), written as k-diffusion 0.1.1.post1's
k_diffusion/sampling.py writes it:

    loop(denoise, x, sigmas, *, [eta, noise,] callback=None, progress=True) -> x at sigma = 0

`deterministic(loop)` and `stochastic(loop)` give it the signature of every SAMPLERS entry
(samplers/common.py): the model and schedule become D and the sigmas (k-diffusion's default
spacing, or Karras's with karras=True); x_T, the unit-variance draw, is multiplied by the first
sigma (as k-diffusion's own examples start); img2img starts part-way down the same sigmas, as
AUTOMATIC1111 does. The result is at sigma = 0, where x is x_0: the latent in x_T's scaled space.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import trange

from .common import Callback, Model
from .denoiser import Denoise, denoiser
from .schedule import NoiseSchedule
from .sigmas import model_sigmas, sigma_to_t, sigmas_for

# noise(sigma, sigma_next) -> N(0, I) shaped like x: the fresh noise of a step from sigma to
# sigma_next (k-diffusion's noise_sampler; the Brownian-tree ones also look at the interval)
Noise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(i, sigma_i, x after step i, the denoised x_0 step i computed)
SigmaCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3 with
    sigma(t) = t, s(t) = 1; k-diffusion to_d)."""
    return (x - denoised) / sigma


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> tuple:
    """An ancestral step from sigma to sigma_next: go down deterministically to sigma_down, then add
    fresh noise of std sigma_up, so that sigma_down^2 + sigma_up^2 = sigma_next^2. sigma_up is the
    DDPM posterior's std in sigma space, times eta (DDIM eq. 16's eta; k-diffusion get_ancestral_step):

        sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))
    """
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def noise_from(generator: torch.Generator | list[torch.Generator] | None, like: torch.Tensor) -> Noise:
    """Fresh N(0, I) noise for each step, drawn on the CPU (the same on every device): from one
    generator for the whole batch, or one per image (an image then never depends on its batch)."""
    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        if isinstance(generator, list):
            return torch.stack([torch.randn(like.shape[1:], generator=g) for g in generator]).to(like)
        return torch.randn(like.shape, generator=generator).to(like)
    return noise


def start(x_T: torch.Tensor, sigmas: torch.Tensor, steps: int, x_0: torch.Tensor | None, t_enc: int | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the starting x, the sigmas left to walk). From noise: x = sigma_0 x_T. img2img (x_0 and
    t_enc = int(strength * steps) given): AUTOMATIC1111's start for k-samplers (sd_samplers_kdiffusion.py
    sample_img2img: sigma_sched = sigmas[steps - t_enc - 1:], xi = x + noise * sigma_sched[0]),
    so t_enc + 1 steps are run; at t_enc = steps (strength 1) the whole list."""
    if x_0 is None:
        return x_T * sigmas[0], sigmas
    sigmas = sigmas[max(steps - t_enc - 1, 0):]
    return x_0 + x_T * sigmas[0], sigmas


def run(loop: Callable, model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str,
        karras: bool, x_0: torch.Tensor | None, t_enc: int | None, callback: Callback | None, progress: bool,
        **loop_options) -> torch.Tensor:
    """The loop over D and the sigmas, from x_T (or img2img's start); the registry's callback gets
    the timestep t of each step's sigma (fractional) instead of the sigma."""
    sigmas = sigmas_for(schedule, steps, karras).to(x_T.device)
    x, sigmas = start(x_T, sigmas, steps, x_0, t_enc)
    log_sigmas = model_sigmas(schedule).log().to(x_T.device)

    def step_done(i: int, sigma: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor) -> None:
        callback(i, sigma_to_t(sigma.view(1), log_sigmas).item(), x, denoised)

    return loop(denoiser(model, schedule, prediction), x, sigmas, callback=step_done if callback else None,
                progress=progress, **loop_options)


def deterministic(loop: Callable) -> Callable:
    """The registry's signature around a loop that adds no noise: it takes karras and img2img's
    start (x_0, t_enc), no eta or generator."""
    def sample(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str = "eps",
               karras: bool = False, x_0: torch.Tensor | None = None, t_enc: int | None = None,
               callback: Callback | None = None, progress: bool = True) -> torch.Tensor:
        return run(loop, model, x_T, schedule, steps, prediction=prediction, karras=karras, x_0=x_0, t_enc=t_enc,
                   callback=callback, progress=progress)
    return named(sample, loop)


def stochastic(loop: Callable) -> Callable:
    """The registry's signature around a loop that adds fresh noise each step (ancestral, SDE):
    also eta (its default, 1, is k-diffusion's) and the generator(s) the noise comes from."""
    def sample(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str = "eps",
               eta: float = 1.0, karras: bool = False, generator: torch.Generator | list[torch.Generator] | None = None,
               x_0: torch.Tensor | None = None, t_enc: int | None = None, callback: Callback | None = None,
               progress: bool = True) -> torch.Tensor:
        return run(loop, model, x_T, schedule, steps, prediction=prediction, karras=karras, x_0=x_0, t_enc=t_enc,
                   callback=callback, progress=progress, eta=eta, noise=noise_from(generator, x_T))
    return named(sample, loop)


def named(sample: Callable, loop: Callable) -> Callable:
    """`sample` under the loop's name and docstring (not functools.wraps: its __wrapped__ would make
    inspect.signature, and so options_of, read the loop's signature instead of the registry's)."""
    sample.__name__ = sample.__qualname__ = f"sample_{loop.__name__}"
    sample.__doc__ = loop.__doc__
    return sample


def steps_of(sigmas: torch.Tensor, name: str, progress: bool):
    """range(len(sigmas) - 1) with a progress bar: step i goes from sigmas[i] to sigmas[i + 1]."""
    return trange(len(sigmas) - 1, desc=name, disable=not progress)


__all__ = ["Denoise", "Noise", "SigmaCallback", "ancestral_step", "deterministic", "noise_from", "start", "stochastic",
           "steps_of", "to_d"]
