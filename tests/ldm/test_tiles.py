"""Tiled evaluation (ldm/tasks/tiles.py): the windows cover the input with the overlap asked for,
the blend weights are a partition of unity (a pointwise network is unchanged by tiling), and
windows that disagree hand over linearly: no step at a tile border (a constructed seam)."""

from __future__ import annotations

import pytest
import torch

from ldm.tasks.tiles import ramp, starts, tiled


@pytest.mark.parametrize("size, tile, overlap", [(512, 192, 32), (100, 40, 10), (64, 64, 16), (65, 64, 16),
                                                 (30, 16, 4), (1000, 96, 24)])
def test_windows_cover_the_axis_overlapping_by_at_least_the_overlap(size, tile, overlap):
    first = starts(size, tile, overlap)
    assert first[0] == 0 and min(first[-1] + tile, size) == size
    for a, b in zip(first, first[1:]):
        assert a < b and a + tile - b >= overlap
    if size > tile:  # the fewest windows: one fewer could not keep the overlap
        fewer = len(first) - 1
        assert fewer < 2 or (size - tile) / (fewer - 1) > tile - overlap


def test_the_ramps_of_one_axis_sum_to_one_everywhere():
    size, tile = 100, 40
    first = starts(size, tile, 10)
    total = torch.zeros(size, dtype=torch.float64)
    for index, start in enumerate(first):
        total[start:start + tile] += ramp(tile, index, first, tile)
    torch.testing.assert_close(total, torch.ones(size, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1, 4])
def test_a_pointwise_network_is_unchanged_by_tiling(scale):
    x = torch.randn(2, 3, 100, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(window):  # pointwise, then each pixel made scale x scale pixels
        return (window.tanh() * 3 + 1).repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    out = tiled(f, x, 48, scale=scale, overlap=8)
    assert out.shape == (2, 3, 100 * scale, 70 * scale)
    torch.testing.assert_close(out, f(x), rtol=0, atol=1e-12)


def test_a_tile_as_large_as_the_input_is_the_whole_run():
    x = torch.randn(1, 2, 40, 24)
    calls = []
    tiled(lambda window: calls.append(window.shape) or window, x, 40)
    assert calls == [(1, 2, 40, 24)]


def jumps(image: torch.Tensor, axis: int) -> torch.Tensor:
    return image.diff(dim=axis).abs()


def test_windows_that_disagree_hand_over_linearly_without_a_seam():
    """Each window adds its own constant (a network that sees its window differently from its
    neighbours): cut hard, the border steps by the difference of the constants; blended, the step
    between any two neighbouring pixels is at most that difference over the shared stretch + 1,
    as the weights are linear and (product of per-axis ramps) sum to one."""
    size, tile, overlap = 120, 40, 12
    offsets = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    count = iter(range(16))

    def f(window):
        return window + offsets[next(count)]

    blended = tiled(f, torch.zeros(1, 1, size, size, dtype=torch.float64), tile, overlap=overlap)[0, 0]
    shared = min(a + tile - b for a, b in zip(starts(size, tile, overlap), starts(size, tile, overlap)[1:]))
    bound = (offsets.max() - offsets.min()) / (shared + 1)
    assert max(jumps(blended, 0).max(), jumps(blended, 1).max()) <= bound + 1e-12
    # The same windows cut hard (each pixel from the last window covering it) step by whole offsets.
    grid = starts(size, tile, overlap)
    cut = torch.zeros(size, size, dtype=torch.float64)
    for i, top in enumerate(grid):
        for j, left in enumerate(grid):
            cut[top:top + tile, left:left + tile] = offsets[i * len(grid) + j]
    assert jumps(cut, 1).max() > 5 * jumps(blended, 1).max()
