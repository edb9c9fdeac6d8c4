"""Classifier-free guidance (Ho & Salimans 2022, eq. 6):

    eps~ = eps(x_t, empty) + s * (eps(x_t, c) - eps(x_t, empty))

The original evaluates both in ONE batch of 2N, unconditional first: [uncond, cond]. With s = 1
the unconditional pass is skipped (eps~ = eps(x_t, c)).
"""

from __future__ import annotations

from typing import Callable

import torch

# A denoiser: (x_t [B, C, H, W], t [B] long, context [B, M, D]) -> eps or v [B, C, H, W]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guided(denoiser: Denoiser, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float
           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """-> model(x_t, t): the guided prediction (eps or v alike: guidance is linear)."""
    if uncond is None or scale == 1.0:
        return lambda x, t: denoiser(x, t, cond)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_uncond, out_cond = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, cond])).chunk(2)
        return out_uncond + scale * (out_cond - out_uncond)

    return model
