"""The judge of the demo model's images: a plain pixel classifier, no learning.

1. every pixel gets the label of the nearest of the eight palette colours;
2. the background is the most common label on the image's border;
3. the foreground colour is the most common label among the other pixels;
4. the shape follows from how much of its bounding box the foreground fills:
   square 1, circle pi/4 = 0.785, triangle (as tall as wide) 1/2; the cuts lie halfway between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldm.demo.shapes import COLOURS

NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[n] for n in NAMES], dtype=np.float32)  # [8, 3]
SQUARE_ABOVE, CIRCLE_ABOVE = (1 + np.pi / 4) / 2, (np.pi / 4 + 0.5) / 2  # 0.89, 0.64
MIN_FOREGROUND_PIXELS = 16


@dataclass(frozen=True)
class Verdict:
    foreground: str | None
    shape: str | None
    background: str
    fill: float  # foreground pixels / bounding-box pixels (0 when there is no foreground)


def classify(image: np.ndarray) -> Verdict:
    """image: [H, W, 3] uint8 RGB -> what the image shows."""
    distance = ((image[:, :, None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)  # [H, W, 8]
    labels = distance.argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = np.bincount(border, minlength=8).argmax()
    rest = labels[labels != background]
    if rest.size < MIN_FOREGROUND_PIXELS:
        return Verdict(None, None, NAMES[background], 0.0)
    foreground = np.bincount(rest, minlength=8).argmax()
    ys, xs = np.nonzero(labels == foreground)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    shape = "square" if fill > SQUARE_ABOVE else "circle" if fill > CIRCLE_ABOVE else "triangle"
    return Verdict(NAMES[foreground], shape, NAMES[background], float(fill))
