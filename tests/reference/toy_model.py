"""A small, smooth network for sampler parity, imported by both sides (our tests as
tests.reference.toy_model, the reference subprocess as toy_model): pure torch, none of the
project's packages.

Why, beside the random UNet: a random UNet is a poor denoiser (its D(x, sigma) is far from any
image), and sampling it in float32 amplifies rounding. Measured on the k-sampler cases of
tests/samplers/test_k_sampler_parity.py: the same float32 code run again in float64 moves the
final latent by up to 2.5e-5 (relative), so two float32 implementations that round differently
inside the UNet (ours and the original's) cannot agree to 1e-5 there, whatever their sampler math.
This model is the same function, computed the same way, on both sides, and sampling it is well
conditioned: what remains of a difference is the samplers' own.

    out(x, t, c) = x / 2 + tanh(M x + (t / 1000) w + P mean(c))      (per pixel, M: C x C)
"""

import torch


class ToyModel(torch.nn.Module):
    """eps or v (whichever the sampler is told) of x [B, C, H, W] at t [B] under context c [B, L, D];
    every weight random, from `seed`."""

    def __init__(self, channels: int = 4, context_dim: int = 32, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Parameter(torch.randn(channels, channels, generator=generator) / channels**0.5)
        self.time = torch.nn.Parameter(torch.randn(channels, generator=generator))
        self.project = torch.nn.Parameter(torch.randn(context_dim, channels, generator=generator) / context_dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("oc,bchw->bohw", self.mix, x)
        h = h + (t.float() / 1000)[:, None, None, None] * self.time[None, :, None, None]
        h = h + (context.mean(1) @ self.project)[:, :, None, None]
        return x / 2 + torch.tanh(h)
