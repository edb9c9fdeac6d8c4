"""The project's own small text-to-image model: the shapes dataset, its training loop, its weights.

    from ldm import StableDiffusion
    sd = StableDiffusion.demo()                      # loads CHECKPOINT through from_checkpoint
    sd.txt2img("a red circle on a blue background")

    python -m ldm train-demo --out my-demo.safetensors   # re-trains it (see docs/demo-model.md)
"""

from pathlib import Path

# Shipped as package data; written by `python -m ldm train-demo` in the original single-file layout.
CHECKPOINT = Path(__file__).with_name("demo-model.safetensors")
