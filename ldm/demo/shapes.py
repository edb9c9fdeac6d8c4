"""The "shapes" dataset the demo model learns from: one filled shape on a uniform background.

Every image is drawn on the fly from a seed, so the dataset is a function, not a folder:

    images, captions = sample_batch(torch.Generator().manual_seed(0), 8)
    # images: [8, 3, 64, 64] in [-1, 1]; captions: "a red circle on a blue background", ...

- colours: exactly the eight RGB values of COLOURS (no anti-aliasing: every pixel is one of them);
- shapes: circle, square (axis-aligned) and triangle (upright, base horizontal, as tall as it is
  wide); the side is 30-70% of the image and the shape lies fully inside it;
- captions: "a {fg} {shape} on a {bg} background", fg != bg: 8 * 3 * 7 = 168 combinations, of
  which the 17 in HELD_OUT (10%) are never shown in training, to measure generalisation.
"""

from __future__ import annotations

import math

import torch

IMAGE_SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

Combination = tuple[str, str, str]  # (foreground colour, shape, background colour)

ALL_COMBINATIONS: tuple[Combination, ...] = tuple(
    (fg, shape, bg) for fg in COLOURS for shape in SHAPES for bg in COLOURS if fg != bg
)

# A fixed 10% of the combinations (17 of 168), drawn once with random.Random(1).sample and written
# out so that no library version can change them. Every colour and shape still appears in training,
# only never in these pairings.
HELD_OUT: tuple[Combination, ...] = (
    ("black", "square", "green"), ("black", "triangle", "magenta"), ("blue", "square", "magenta"),
    ("cyan", "square", "black"), ("cyan", "triangle", "green"), ("green", "circle", "cyan"),
    ("green", "square", "black"), ("green", "square", "yellow"), ("magenta", "circle", "white"),
    ("magenta", "square", "yellow"), ("magenta", "triangle", "green"), ("magenta", "triangle", "white"),
    ("red", "square", "green"), ("red", "triangle", "yellow"), ("white", "circle", "red"),
    ("white", "triangle", "magenta"), ("yellow", "circle", "blue"),
)
TRAINING: tuple[Combination, ...] = tuple(c for c in ALL_COMBINATIONS if c not in HELD_OUT)


def caption(fg: str, shape: str, bg: str) -> str:
    return f"a {fg} {shape} on a {bg} background"


def shape_masks(shape_ids: torch.Tensor, sides: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                size: int = IMAGE_SIZE) -> torch.Tensor:
    """Which pixels each shape covers: [B] ints (index into SHAPES, side, left, top) -> [B, size, size] bool.

    A pixel belongs to the shape when its centre does: the shapes are exact, there is no blending.
    """
    centre = torch.arange(size, dtype=torch.float32) + 0.5
    u = centre.view(1, 1, size)  # x of each pixel centre
    v = centre.view(1, size, 1)  # y
    s, left, top = (t.to(torch.float32).view(-1, 1, 1) for t in (sides, x0, y0))
    inside_box = (u >= left) & (u < left + s) & (v >= top) & (v < top + s)
    radius = s / 2
    circle = (u - left - radius) ** 2 + (v - top - radius) ** 2 <= radius**2
    # Apex at the top centre, base along the bottom edge: half-width grows by 1/2 per row of depth.
    triangle = inside_box & ((u - left - radius).abs() <= (v - top) / 2)
    shape_ids = shape_ids.view(-1, 1, 1)
    return torch.where(shape_ids == 0, circle, torch.where(shape_ids == 1, inside_box, triangle))


def render(combinations: list[Combination], sides: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
           size: int = IMAGE_SIZE) -> torch.Tensor:
    """Draw the images: [B] geometry -> [B, 3, size, size] in [-1, 1] (255 -> 1, 0 -> -1)."""
    shape_ids = torch.tensor([SHAPES.index(shape) for _, shape, _ in combinations])
    fg = torch.tensor([COLOURS[c] for c, _, _ in combinations], dtype=torch.float32).view(-1, 3, 1, 1)
    bg = torch.tensor([COLOURS[c] for _, _, c in combinations], dtype=torch.float32).view(-1, 3, 1, 1)
    mask = shape_masks(shape_ids, sides, x0, y0, size).unsqueeze(1)
    return torch.where(mask, fg, bg) / 127.5 - 1.0


def sample_batch(generator: torch.Generator, batch_size: int,
                 combinations: tuple[Combination, ...] = TRAINING,
                 size: int = IMAGE_SIZE) -> tuple[torch.Tensor, list[str]]:
    """A random batch: the combinations uniformly, side uniform in [30%, 70%] of `size` (whole
    pixels), the position uniform over every place the shape fits. Same generator state -> same batch."""
    picks = torch.randint(len(combinations), (batch_size,), generator=generator)
    chosen = [combinations[i] for i in picks.tolist()]
    low, high = math.ceil(0.3 * size), math.floor(0.7 * size)  # 20..44 pixels at 64
    sides = torch.randint(low, high + 1, (batch_size,), generator=generator)
    # torch.rand in [0, 1) scaled to the free room (size - side + 1 positions), floored: uniform.
    room = (size - sides + 1).to(torch.float32)
    x0 = (torch.rand(batch_size, generator=generator) * room).floor().to(torch.int64)
    y0 = (torch.rand(batch_size, generator=generator) * room).floor().to(torch.int64)
    return render(chosen, sides, x0, y0, size), [caption(*c) for c in chosen]
