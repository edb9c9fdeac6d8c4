"""Reading original Stable Diffusion checkpoints safely and mapping their keys onto our modules."""
