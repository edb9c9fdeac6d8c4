"""Tiled evaluation: a network run on overlapping windows of a large input, the window outputs
blended back into one output, so that memory grows with the window, not with the image.

The blend is MultiDiffusion's (Bar-Tal et al. 2023, eq. 5): the output at a pixel is the weighted
mean of what every window covering it says,

    Phi(x) = sum_i F_i^-1(W_i * f(F_i(x))) / sum_j F_j^-1(W_j)

F_i cropping window i, F_i^-1 putting a window back in place (zero elsewhere), W_i the window's
weights. MultiDiffusion uses W_i = 1; here W_i rises linearly across the overlap from the window's
edge (where its network saw the least context) to its inside, and stays 1 on the image's own border,
so the weights are continuous and one window hands over to the next without a step.

Applied to the UNet at every sampler step, the windows agree on ONE latent (each step fuses their
predictions; for DDIM, whose update is affine in the prediction, this is the same as fusing each
window's next latent, which is how the paper writes it). Applied to the VAE decoder, the windows
decode the same latent and differ only near their edges. A window as large as the input is the
untiled run itself, bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

# tile="auto" (ldm/tasks/upscale.py): inputs up to this many pixels run whole; larger ones in tiles
# of AUTO_TILE pixels overlapping by OVERLAP. Measured on this project's 2-core, 24 GB machine
# (docs/performance.md, "Tiled upscaling"): a 512x512 input in 192-pixel tiles peaks at a few GB,
# while a whole 512x512 input would decode a 2048x2048 image at once (2 GB per activation of the
# decoder's first level) and attend over 262144 positions in the decoder's middle block.
AUTO_WHOLE_PIXELS = 256 * 256
AUTO_TILE = 192
OVERLAP = 32


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the windows of one axis begin: as few windows of `tile` as cover `size` while each
    pair of neighbours overlaps by at least `overlap`, spread evenly (the first at 0, the last
    ending at `size`). One window of the whole axis when it is no longer than `tile`."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(k * (size - tile) / (count - 1)) for k in range(count)]


def ramp(length: int, index: int, window_starts: list[int], tile: int) -> torch.Tensor:
    """W_i along one axis for window `index` (of length `length`, beginning at window_starts[index]):
    1 inside, rising linearly across the stretch it shares with the previous window and falling
    across the stretch it shares with the next one, never to 0 (the outermost shared pixel gets
    1 / (shared + 1), so that two windows' weights sum to 1 across their overlap). An edge on the
    image's border stays 1."""
    weight = torch.ones(length, dtype=torch.float64)
    start = window_starts[index]
    if index > 0:  # [start, end of the previous window) is shared with the previous window
        shared = window_starts[index - 1] + tile - start
        rising = torch.arange(1, shared + 1, dtype=torch.float64) / (shared + 1)
        weight[:shared] = torch.minimum(weight[:shared], rising)
    if index < len(window_starts) - 1:  # [next start, start + length) is shared with the next one
        shared = start + length - window_starts[index + 1]
        falling = torch.arange(shared, 0, -1, dtype=torch.float64) / (shared + 1)
        weight[length - shared:] = torch.minimum(weight[length - shared:], falling)
    return weight


def overlap_for(tile: int) -> int:
    """The least overlap of windows of `tile`: OVERLAP, or a quarter of a smaller tile."""
    return min(OVERLAP, tile // 4)


def tiled(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, *, scale: int = 1,
          down: int = 1, overlap: int | None = None, progress: str | None = None) -> torch.Tensor:
    """f over x [B, C, H, W] in windows of tile x tile on the grid of x's size / `down` (overlapping
    by at least `overlap`, by default overlap_for(tile)), blended as Phi above. f maps a [B, C,
    down*h, down*w] window to [B, C', scale*h, scale*w]: the UNet has scale 1 and down 1, the VAE
    decoder scale 8 (a latent window to its pixels), the VAE encoder down 8 (the pixels of a latent
    window to it), so that every window is a whole number of latent pixels. The weights are laid out
    at the output's resolution. tile None, or no smaller than the grid, is f(x) itself. progress: a
    label for a progress bar over the windows (None: no bar)."""
    height, width = x.shape[2] // down, x.shape[3] // down
    if tile is None or (height <= tile and width <= tile):
        return f(x)
    overlap = overlap_for(tile) if overlap is None else overlap
    rows, columns = starts(height, tile, overlap), starts(width, tile, overlap)
    h, w = min(tile, height), min(tile, width)
    out_rows, out_columns = [r * scale for r in rows], [c * scale for c in columns]
    total = weights = None
    windows = [(i, top, j, left) for i, top in enumerate(rows) for j, left in enumerate(columns)]
    for i, top, j, left in tqdm(windows, desc=progress, disable=progress is None, leave=False):
        out = f(x[:, :, top * down:(top + h) * down, left * down:(left + w) * down])
        if total is None:
            total = out.new_zeros(*out.shape[:2], height * scale, width * scale)
            weights = out.new_zeros(height * scale, width * scale)
        weight = torch.outer(ramp(h * scale, i, out_rows, tile * scale),
                             ramp(w * scale, j, out_columns, tile * scale)).to(out)
        region = (slice(top * scale, (top + h) * scale), slice(left * scale, (left + w) * scale))
        total[:, :, region[0], region[1]] += weight * out
        weights[region] += weight
    return total / weights
