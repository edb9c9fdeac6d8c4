"""Random values for every tensor of a model, for parity tests: both sides of a comparison and the
reference subprocess use this one module (run_original.py imports it by its file's folder, so it
must import nothing of this project's).

Weights ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), every other vector ~ N(0, 0.1^2), so
nothing is zero (the original zero-initialises output layers: a fresh model outputs zeros and
proves nothing) and activations keep their size through the network.

The N(0, 1) numbers are cut from one pool of 2^24 draws (64 MiB), from an offset given by the
tensor's name and the seed (wrapping around): slicing a pool is four times cheaper than running a
generator over the 1.3 billion weights of a full-size model (randn 12 s, a slice and a scale 3 s
here), any tensor can be drawn again alone, and two tensors of one shape differ.
"""

from __future__ import annotations

import functools
import math
import zlib

import torch

POOL_SEED = 20240601
POOL_SIZE = 1 << 24
NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)


@functools.cache
def pool() -> torch.Tensor:
    return torch.randn(POOL_SIZE, generator=torch.Generator().manual_seed(POOL_SEED))


def drawn(key: str, shape: torch.Size | tuple[int, ...], is_norm_scale: bool, seed: int = 0) -> torch.Tensor:
    """The value of tensor `key` (float32) for this seed."""
    numbers = pool()
    count, start, pieces = math.prod(shape), zlib.crc32(f"{seed}/{key}".encode()) % POOL_SIZE, []
    while count > 0:
        pieces.append(numbers[start:start + count])
        count, start = count - pieces[-1].numel(), 0
    noise = torch.cat(pieces).reshape(shape)
    if is_norm_scale:
        return 1 + 0.1 * noise
    if len(shape) >= 2:
        return noise / math.sqrt(math.prod(shape[1:]))
    return 0.1 * noise


def norm_scale_keys(model: torch.nn.Module) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules() if isinstance(m, NORMS)}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every floating tensor of the state dict, in place; non-persistent buffers (causal masks) are
    left alone."""
    scales = norm_scale_keys(model)
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                tensor.copy_(drawn(key, tensor.shape, key in scales, seed))
