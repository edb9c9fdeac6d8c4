"""Stable Diffusion (latent diffusion), written from scratch to be read, taught from and trusted."""

__version__ = "0.1.0"
