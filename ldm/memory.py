"""The low-memory switches: what the `optimizedSD` scripts did to run SD in 8 GB, and diffusers'
`enable_*` switches, as settings of the same modules (DESIGN.md rule 11). Each is a method of
StableDiffusion; `enable_low_memory` turns on the ones that pay on the model's device.

- Layerwise casting (`enable_layerwise_casting`): the weights are STORED in bfloat16, half their
  float32 memory, and each layer's weights are cast to the compute dtype (float32) just before the
  layer runs and back just after; only one layer's float32 copy exists at a time. optimizedSD keeps
  its weights in half precision for the same reason (`model.half()`); the computation stays float32,
  so a run is exactly the float32 run of a model whose weights were rounded to bfloat16 (tested).
- VAE tiling (`enable_vae_tiling`): the decoder and the encoder run on overlapping windows of
  `tile` latent pixels, blended (tasks/tiles.py), so their activations grow with the window, not the
  image: a 2048x2048 decode fits in a few GB. Not the untiled numbers: a window's pixels near its
  edge see less of the latent than the whole decode does (the bound is measured in
  tests/ldm/test_memory.py and docs/performance.md).
- Feed-forward chunking (`enable_forward_chunking`): the UNet's GEGLU feed-forward, whose inner
  projection is its largest activation, over chunks of tokens (each token's output is its own).
- Attention slicing (`enable_attention_slicing`): the UNet's and the VAE's attention computed over
  chunks of `slice_size` queries, so the [queries, keys] score matrix is never whole. torch's fused
  attention (the default, "sdpa") already never builds it on the CPU and on CUDA, where slicing
  only costs time and memory (measured, docs/performance.md); it pays where SDPA falls back to the
  plain formula, and `enable_low_memory` leaves it off.
- Sequential placement (`enable_model_cpu_offload`): optimizedSD's split model, for an accelerator
  with less memory than the model needs. Every network waits on the CPU and is moved to the device
  just before it runs; the one that ran before it goes back to the CPU: the text encoder, then the
  UNet for all the steps, then the VAE. Only the largest network is ever on the device.
- The allocator (`return_freed_memory`, glibc): blocks of 128 KiB and more go back to the system
  as soon as they are freed, instead of staying in the heap; without it the run's resident memory
  creeps a few hundred MB above what it holds (measured, docs/performance.md).

What the switches cannot change: with every weight in float32, the weights alone (4.0 GiB for v1)
are most of a run's peak; `enable_low_memory` halves them.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch
from torch import nn

from .modules.attention import FeedForward, set_attention_mode
from .precision import dtype_of

if TYPE_CHECKING:
    from .pipeline import StableDiffusion

M_MMAP_THRESHOLD = -3  # <malloc.h>

# enable_vae_tiling's default: 32 latent pixels (256 image pixels) a window, overlapping by 8.
VAE_TILE = 32


def networks(sd: StableDiffusion) -> dict[str, nn.Module]:
    """The model's networks by name (MiDaS only where the model carries it)."""
    found = {"unet": sd.unet, "vae": sd.vae, "text_encoder": sd.text_encoder}
    if sd.depth_model is not None:
        found["depth_model"] = sd.depth_model
    return found


def _own_weights(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The layer's own floating parameters and buffers (not its children's), by name."""
    own = {**dict(layer.named_parameters(recurse=False)), **dict(layer.named_buffers(recurse=False))}
    return {name: tensor for name, tensor in own.items() if tensor.is_floating_point()}


def _point(layer: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Make the layer's weights these tensors (a parameter keeps its identity, only its data changes)."""
    for name, tensor in weights.items():
        if name in layer._parameters:
            layer._parameters[name].data = tensor
        else:
            layer._buffers[name] = tensor


def _cast_up(layer: nn.Module, compute_dtype: torch.dtype) -> None:
    """Before the layer runs: its weights in compute_dtype, the stored ones kept aside. (.data: a
    tensor object of its own, so that pointing the parameter elsewhere leaves the stored one be.)"""
    layer._stored_weights = {name: tensor.data for name, tensor in _own_weights(layer).items()}
    _point(layer, {name: tensor.to(compute_dtype) for name, tensor in layer._stored_weights.items()})


def _cast_back(layer: nn.Module) -> None:
    """After the layer ran: back to the stored weights; the cast copy is freed."""
    _point(layer, layer.__dict__.pop("_stored_weights"))


def enable_layerwise_casting(module: nn.Module, storage_dtype: torch.dtype = torch.bfloat16,
                             compute_dtype: torch.dtype | None = None) -> None:
    """Store `module`'s weights in storage_dtype and compute each layer in compute_dtype (None: the
    dtype the weights have now); precision.dtype_of reports compute_dtype from then on.

    A layer here is a module with weights of its own and none below it (a Linear, a convolution, a
    norm, an embedding); the few modules that hold a weight beside such layers (a position
    embedding) keep theirs in compute_dtype, rounded to storage_dtype. Before a layer runs, its
    stored weights are cast to compute_dtype; after, the layer points back at the stored ones and
    the cast copy is freed: one layer's copy at a time. Whatever holds the stored weights between
    calls is what the layer's parameters are, so `.to(device)` moves them as any module's."""
    if getattr(module, "compute_dtype", None) is not None:
        raise ValueError(f"{type(module).__name__} already stores its weights in another dtype than it computes "
                         f"in ({module.compute_dtype}); enable layerwise casting once")
    compute_dtype = compute_dtype or dtype_of(module)
    for layer in module.modules():
        own = _own_weights(layer)
        if not own:
            continue
        below = any(_own_weights(child) for child in layer.modules() if child is not layer)
        if below or storage_dtype == compute_dtype:  # rounded as the stored ones: every weight a bfloat16 value
            _point(layer, {name: tensor.data.to(storage_dtype).to(compute_dtype) for name, tensor in own.items()})
            continue
        _point(layer, {name: tensor.data.to(storage_dtype) for name, tensor in own.items()})
        layer.register_forward_pre_hook(lambda layer, args: _cast_up(layer, compute_dtype))
        layer.register_forward_hook(lambda layer, args, output: _cast_back(layer))
    module.compute_dtype = compute_dtype


def _check_size(name: str, value, least: int, meaning: str) -> None:
    """A switch's size: None (off) or an int of at least `least`; refused by name otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        must = "a positive int" if least == 1 else f"an int >= {least}"
        raise ValueError(f"{name}={value!r}: must be None or {must} ({meaning})")


def enable_vae_tiling(sd: StableDiffusion, tile: int | None = VAE_TILE) -> None:
    """Decode and encode in windows of `tile` latent pixels (None: whole, the default)."""
    _check_size("tile", tile, 8, f"the side of a window, in latent pixels; {VAE_TILE} is "
                                 f"{VAE_TILE * sd.config.autoencoder.downsampling_factor} image pixels")
    sd.vae_tile = tile


def enable_attention_slicing(sd: StableDiffusion, slice_size: int | None = 1024) -> None:
    """The UNet's and the VAE's attention over chunks of slice_size queries (None: back to SDPA)."""
    _check_size("slice_size", slice_size, 1, "queries per chunk")
    for network in (sd.unet, sd.vae):
        set_attention_mode(network, "sdpa" if slice_size is None else "sliced", slice_size)


def enable_forward_chunking(sd: StableDiffusion, chunk_size: int | None = 1024) -> None:
    """The UNet's feed-forwards over chunks of chunk_size tokens (None: all at once)."""
    _check_size("chunk_size", chunk_size, 1, "tokens per chunk")
    for module in sd.unet.modules():
        if isinstance(module, FeedForward):
            module.chunk_size = chunk_size


def enable_model_cpu_offload(sd: StableDiffusion, device: torch.device | str = "cuda") -> None:
    """Sequential placement: each network on `device` only while it runs (diffusers' name).

    A forward pre-hook on every network and on each of its direct children (the VAE runs through
    encode and decode, which call its children, not its forward) brings that network to the device
    and sends the one there before it back to the CPU. sd.device reports `device` from then on, so
    the tasks put their tensors there. Not for the CPU: there is nowhere to move to; the CPU's
    switch is enable_low_memory."""
    device = torch.device(device)
    if device.type == "cpu":
        raise ValueError("enable_model_cpu_offload(device='cpu'): it moves each network to an accelerator (cuda, "
                         "mps) only while it runs; on the CPU there is nowhere to move to (see enable_low_memory)")
    if sd.offload_device is not None:
        raise ValueError(f"the model already offloads to {sd.offload_device}; enable offloading once")
    _install_offload(sd, device)


def _install_offload(sd: StableDiffusion, device: torch.device) -> None:
    """The hooks of enable_model_cpu_offload (tests install them with the CPU as the device, to
    watch the order of the moves)."""
    placed: list[nn.Module] = []  # the network on the device (a list: a Module attribute would become a child)
    for network in networks(sd).values():
        _move(network, torch.device("cpu"))
        for module in (network, *network.children()):
            module.register_forward_pre_hook(lambda module, args, network=network: _place(network, placed, device))
    sd.offload_device = device


def _place(network: nn.Module, placed: list[nn.Module], device: torch.device) -> None:
    """Before `network` (or a child of it) runs: it on the device, the one there before on the CPU."""
    if placed and placed[0] is network:
        return
    if placed:
        _move(placed.pop(), torch.device("cpu"))
    _move(network, device)
    placed.append(network)


def _move(network: nn.Module, device: torch.device) -> None:
    network.to(device)


def return_freed_memory() -> bool:
    """glibc only: blocks of 128 KiB and more are mapped and unmapped on their own (mallopt
    M_MMAP_THRESHOLD), so that a freed activation or cast weight goes back to the system at once.
    By default glibc raises that threshold up to 32 MiB as large blocks are freed and keeps what is
    freed below it in its heap, where the next, differently sized block may not fit: the run's
    resident memory creeps above what it holds. The whole process is affected. -> whether it was set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): its allocator as it is
        return False


def storage_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    """Where enable_low_memory stores weights that compute in compute_dtype: bfloat16 for float32
    (half the memory, the exponent range kept); a half-precision model stores them as they are."""
    return torch.bfloat16 if compute_dtype == torch.float32 else compute_dtype


def enable_low_memory(sd: StableDiffusion, vae_tile: int = VAE_TILE, compute_dtype: torch.dtype | None = None) -> None:
    """optimizedSD's purpose on this model: every network's weights stored in storage_dtype() and
    computed in compute_dtype (None: the dtype they have now), the VAE tiled, the feed-forwards
    chunked, freed memory handed back to the system at once (return_freed_memory). Attention stays
    SDPA (see above)."""
    for network in networks(sd).values():
        compute = compute_dtype or dtype_of(network)
        enable_layerwise_casting(network, storage_dtype(compute), compute)
    enable_vae_tiling(sd, vae_tile)
    enable_forward_chunking(sd)
    return_freed_memory()
