"""Stable Diffusion (latent diffusion), written from scratch to be read, taught from and trusted.

    from ldm import StableDiffusion
    sd = StableDiffusion.from_checkpoint("v1-5-pruned-emaonly.safetensors")
"""

__version__ = "0.1.0"

__all__ = ["StableDiffusion", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `python -m ldm --version` and `import ldm` stay light.
    if name == "StableDiffusion":
        from .pipeline import StableDiffusion

        return StableDiffusion
    raise AttributeError(f"module 'ldm' has no attribute {name!r}")
