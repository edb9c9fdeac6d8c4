"""Classifier-free guidance (Ho & Salimans 2022, eq. 6):

    eps~ = eps(x_t, empty) + s * (eps(x_t, c) - eps(x_t, empty))

The original evaluates both in ONE batch of 2N, unconditional first: [uncond, cond]. With s = 1
the unconditional pass is skipped (eps~ = eps(x_t, c)).

Guidance is linear, so it may be applied to eps, to v, or to anything linear in them (the
denoised x_0 of k-diffusion, the noise of DPM-Solver's wrapper) with the same result in exact
arithmetic. In float32 each place rounds differently, and a sampler that reproduces code which
guides elsewhere guides where that code does: `Guided.halves` gives it the two outputs, and
`Guided.combine` mixes whatever it made of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# A denoiser: (x_t [B, C, H, W], t [B], context [B, M, D]) -> eps or v [B, C, H, W]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Guided:
    """model(x_t, t) -> the guided prediction (eps or v alike), and its parts for samplers that
    guide another quantity. uncond None: no guidance (the conditional output alone)."""

    denoiser: Denoiser
    cond: torch.Tensor
    uncond: torch.Tensor | None
    scale: float

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.uncond is None:
            return self.denoiser(x, t, self.cond)
        return self.combine(*self.halves(x, t))

    def halves(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional, conditional) output, from one batch [uncond, cond] as the original."""
        return self.denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.uncond, self.cond])).chunk(2)

    def combine(self, out_uncond: torch.Tensor, out_cond: torch.Tensor) -> torch.Tensor:
        """eq. 6 on any quantity linear in the network's output."""
        return out_uncond + self.scale * (out_cond - out_uncond)


def guided(denoiser: Denoiser, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> Guided:
    """-> model(x_t, t): the guided prediction. With scale 1 the unconditional pass is skipped."""
    return Guided(denoiser, cond, None if scale == 1.0 else uncond, scale)
