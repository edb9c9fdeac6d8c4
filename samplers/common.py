"""What every sampler shares: the model it is handed, the callback it calls, and the one signature
that the SAMPLERS table (samplers/__init__.py) holds it to.

A sampler is a short function over tensors, its loop in plain sight (k-diffusion's sampling.py):

    sample(model, x_T, schedule, steps, *, prediction="eps", callback=None, progress=True, **options) -> x_0

- `model(x_t, t)`: x_t [B, C, H, W], t [B] long -> the network's output [B, C, H, W], eps or v
  (`prediction` says which), already guided (samplers/guidance.py);
- `x_T`: the starting latent in the (scaled) latent space; the result is the final latent in the
  same space;
- `callback(i, t, x_t, pred_x0)` after step i (0, 1, ...): the timestep t the step evaluated, the
  new latent and that step's predicted x0;
- options, by keyword, that a sampler takes only if it has them: `eta` (the scale of the noise it
  adds each step), `generator` (where that noise comes from: one CPU torch.Generator, or one per
  image), `first_index` (start part-way down the schedule, as img2img does). A sampler without
  one of them does not name it in its signature; `options_of` reads which it takes, so a caller
  can refuse an option before any work is done (eta for PLMS, a late start for a sampler that
  always starts at x_T).

No sampler keeps state between calls.
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol

import torch

from .schedule import NoiseSchedule

# model(x_t [B, C, H, W], t [B] long) -> eps or v [B, C, H, W]
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(i, t, x_t, pred_x0), after step i
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
# The keywords a sampler may take beyond the common ones (see the module doc).
OPTIONS = ("eta", "generator", "first_index")


class Sampler(Protocol):
    """The signature of every entry of SAMPLERS; `**options` stands for the OPTIONS it takes."""

    def __call__(self, model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
                 prediction: str = "eps", callback: Callback | None = None, progress: bool = True,
                 **options) -> torch.Tensor: ...


def options_of(sampler: Sampler) -> frozenset[str]:
    """The OPTIONS that `sampler` takes, read from its own signature."""
    return frozenset(OPTIONS) & inspect.signature(sampler).parameters.keys()
