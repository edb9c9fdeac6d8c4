"""What every sampler shares: the model it is handed, the callback it calls, and the one signature
that the SAMPLERS table (samplers/__init__.py) holds it to.

A sampler is a short function over tensors, its loop in plain sight (k-diffusion's sampling.py):

    sample(model, x_T, schedule, steps, *, prediction="eps", callback=None, progress=True, **options) -> x_0

- `model(x_t, t)`: x_t [B, C, H, W], t [B] (long, or float for a fractional timestep) -> the
  network's output [B, C, H, W], eps or v (`prediction` says which), already guided
  (samplers/guidance.py);
- `x_T`: the unit-variance draw N(0, I) in the (scaled) latent space (each sampler scales it to its
  first noise level); the result is the final latent in the same space;
- `callback(i, t, x_t, pred_x0)` after step i (0, 1, ...): the timestep t the step evaluated (an
  int for DDIM and PLMS, fractional for the samplers that walk sigmas or continuous time), the new
  latent and that step's predicted x0;
- options, by keyword, that a sampler takes only if it has them: `eta` (the scale of the noise it
  adds each step; each sampler's own default when not given), `generator` (where that noise comes
  from: one CPU torch.Generator, or one per image), `karras` (Karras et al.'s sigma spacing, for the
  samplers that walk a list of sigmas), `x_0` and `t_enc` (img2img: start part-way down, from the
  clean latent x_0 noised with x_T, t_enc = int(strength * steps); each sampler starts where its
  original does). A sampler without one of them does not name it in its signature; `options_of`
  reads which it takes, so a caller can refuse an option before any work is done (eta for PLMS,
  karras for DDIM).

A sampler that cannot run any number of steps from x_T says so in two attributes, `min_steps` and
`min_steps_why` (the v2 DPM-Solver++: 2), read by `min_steps_of` before any work.

No sampler keeps state between calls.
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol

import torch

from .schedule import NoiseSchedule

# model(x_t [B, C, H, W], t [B] long or float) -> eps or v [B, C, H, W]
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(i, t, x_t, pred_x0), after step i (t: an int, or fractional)
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
# The keywords a sampler may take beyond the common ones (see the module doc).
OPTIONS = ("eta", "generator", "karras", "x_0", "t_enc")


class Sampler(Protocol):
    """The signature of every entry of SAMPLERS; `**options` stands for the OPTIONS it takes."""

    def __call__(self, model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
                 prediction: str = "eps", callback: Callback | None = None, progress: bool = True,
                 **options) -> torch.Tensor: ...


def options_of(sampler: Sampler) -> frozenset[str]:
    """The OPTIONS that `sampler` takes, read from its own signature."""
    return frozenset(OPTIONS) & inspect.signature(sampler).parameters.keys()


def default_of(sampler: Sampler, option: str):
    """The value `sampler` uses for an option it takes when none is given (eta: 0 for DDIM, 1 for
    the ancestral and SDE samplers, as in the code each reproduces)."""
    return inspect.signature(sampler).parameters[option].default


def min_steps_of(sampler: Sampler) -> tuple[int, str]:
    """(the fewest steps `sampler` runs from x_T, why): 1 unless the sampler says otherwise."""
    return getattr(sampler, "min_steps", 1), getattr(sampler, "min_steps_why", "")
