"""One table per component, from the ORIGINAL checkpoint's key names to ours.

Each module here has `original_to_ours(config) -> dict[str, str]`: every key of that component in
an original checkpoint (without its prefix such as `model.diffusion_model.`) mapped to the name of
the same tensor in our module's state dict. The tables are data, built from the config because the
number of blocks depends on it; tests check they cover both sides exactly.
"""
