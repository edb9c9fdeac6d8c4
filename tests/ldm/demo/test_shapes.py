"""The shapes dataset: exact colours, sizes, positions, captions, the held-out split; and the pixel
classifier that judges the demo model, checked on the ground truth first."""

from __future__ import annotations

import numpy as np
import torch

from ldm.demo.shapes import (ALL_COMBINATIONS, COLOURS, HELD_OUT, SHAPES, TRAINING, caption, render,
                             sample_batch)

from .pixel_classifier import classify


def to_uint8(images: torch.Tensor) -> np.ndarray:
    # [B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_the_combinations_and_the_fixed_ten_percent_held_out():
    assert len(ALL_COMBINATIONS) == 8 * 3 * 7 == 168
    assert len(set(HELD_OUT)) == len(HELD_OUT) == 17  # round(16.8)
    assert set(HELD_OUT) <= set(ALL_COMBINATIONS)
    assert set(TRAINING) == set(ALL_COMBINATIONS) - set(HELD_OUT) and len(TRAINING) == 151
    # every colour (as foreground and as background) and every shape is still seen in training
    assert {c[0] for c in TRAINING} == {c[2] for c in TRAINING} == set(COLOURS)
    assert {c[1] for c in TRAINING} == set(SHAPES)
    assert caption("red", "circle", "blue") == "a red circle on a blue background"


def test_batches_are_a_function_of_the_seed_and_never_show_a_held_out_combination():
    a, captions_a = sample_batch(torch.Generator().manual_seed(3), 64)
    b, captions_b = sample_batch(torch.Generator().manual_seed(3), 64)
    c, _ = sample_batch(torch.Generator().manual_seed(4), 64)
    assert torch.equal(a, b) and captions_a == captions_b
    assert not torch.equal(a, c)
    held_out = {caption(*h) for h in HELD_OUT}
    for seed in range(20):
        _, captions = sample_batch(torch.Generator().manual_seed(seed), 256)
        assert not held_out & set(captions)


def test_pixels_are_exactly_the_palette_and_the_shape_has_its_size_and_lies_inside():
    images, captions = sample_batch(torch.Generator().manual_seed(0), 300)
    assert images.shape == (300, 3, 64, 64)
    pixels = to_uint8(images)
    palette = {tuple(v) for v in COLOURS.values()}
    for image, text in zip(pixels, captions):
        _, fg, shape, _, _, bg, _ = text.split()
        colours = {tuple(p) for p in image.reshape(-1, 3).tolist()}
        assert colours == {COLOURS[fg], COLOURS[bg]} and colours <= palette
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (border == COLOURS[bg]).all(axis=-1).mean() > 0.5  # the background owns the border
        ys, xs = np.nonzero((image == COLOURS[fg]).all(-1))
        width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert 0.3 * 64 - 1 <= max(width, height) <= 0.7 * 64, (text, width, height)


def test_the_pixel_classifier_is_right_on_every_ground_truth_image():
    """The judge must be perfect where the truth is known, or its verdicts on samples mean nothing.
    Also at the extremes: the smallest and largest side, in the corners."""
    images, captions = sample_batch(torch.Generator().manual_seed(1), 400, ALL_COMBINATIONS)
    combos = [(fg, shape, bg) for fg in ("red", "black") for shape in SHAPES for bg in ("white", "blue")]
    for side, corner in ((20, 0), (44, 0), (20, 44), (44, 20)):
        n = len(combos)
        extra = render(combos, torch.full((n,), side), torch.full((n,), corner), torch.full((n,), 64 - side - corner))
        images = torch.cat([images, extra])
        captions += [caption(*c) for c in combos]
    fills = {s: [] for s in SHAPES}
    for image, text in zip(to_uint8(images), captions):
        _, fg, shape, _, _, bg, _ = text.split()
        verdict = classify(image)
        assert (verdict.foreground, verdict.shape, verdict.background) == (fg, shape, bg), (text, verdict)
        fills[shape].append(verdict.fill)
    print({s: (round(min(f), 3), round(max(f), 3)) for s, f in fills.items()})
