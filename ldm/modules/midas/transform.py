"""MiDaS's input: the original's AddMiDaS (ldm/data/util.py) with load_midas_transform("dpt_hybrid")
(ldm/modules/midas/api.py), which the depth model's scripts apply to the image:

    x in [-1, 1] -> (x + 1) / 2 in [0, 1]
      -> resized, keeping the aspect ratio, so that one side is 384 ("minimal": the side whose
         scale is closer to 1), each side rounded to a multiple of 32; bicubic
      -> (x - 0.5) / 0.5, back to [-1, 1]

The original resizes with OpenCV (cv2.INTER_CUBIC on float32 HWC arrays); here torch's bicubic
(align_corners=False, no antialiasing): the same kernel (a = -0.75), the same half-pixel centres,
the same clamped border. It runs in float64: in float32, torch places the source points of a
non-round scale with up to 3e-5 error in the pixel values (measured at 300x500 -> 224x384 on a
noise image), where OpenCV stays within 3e-7 of the exact resize; in float64 the two agree to
1e-6 (tests/ldm/test_midas.py measures them against each other).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NET_SIZE = 384  # load_midas_transform: net_w = net_h = 384 for dpt_hybrid
MULTIPLE = 32  # ensure_multiple_of


def midas_size(height: int, width: int) -> tuple[int, int]:
    """The resized (height, width): midas/transforms.py Resize.get_size with keep_aspect_ratio and
    resize_method="minimal": scale by whichever of 384/H and 384/W is closer to 1 (ties: the
    height's), then round each side to a multiple of 32 (numpy's round, halves to even)."""
    scale_height, scale_width = NET_SIZE / height, NET_SIZE / width
    scale = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height
    return (int(np.round(scale * height / MULTIPLE) * MULTIPLE), int(np.round(scale * width / MULTIPLE) * MULTIPLE))


def midas_input(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> MiDaS's input [B, 3, h, w] (midas_size), in [-1, 1]."""
    size = midas_size(*images.shape[2:])
    x = (images.float() + 1) * 0.5
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x.double(), size=size, mode="bicubic", align_corners=False).float()
    return ((x - 0.5) / 0.5).to(images.dtype)
