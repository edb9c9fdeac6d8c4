"""MiDaS DPT-Hybrid: the Dense Prediction Transformer (Ranftl et al. 2021, "Vision Transformers
for Dense Prediction", sec. 3) over the hybrid ViT, as the SD 2 depth model carries it
(`depth_model.model`: midas/dpt_depth.py DPTDepthModel(backbone="vitb_rn50_384", non_negative=True)).

    x [B, 3, H, W] in [-1, 1], H and W multiples of 32
      encoder (vit_hybrid.py): stem maps [B, 256, H/4, W/4], [B, 512, H/8, W/8];
                               tokens of blocks 8 and 11 [B, 1 + N, 768]
      reassemble (sec. 3.2): tokens -> maps [B, 768, H/16, W/16], [B, 768, H/32, W/32]
      each map -> 256 features (3x3 conv), fused from the coarsest up (sec. 3.3): [B, 256, H/2, W/2]
      head: [B, 1, H, W], relative inverse depth (larger = nearer), >= 0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldm.config import MiDaSConfig

from .vit_hybrid import HybridViT


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """x2 bilinear with align_corners=True, as every upsampling of the original's fusion and head."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Reassemble(nn.Module):
    """Tokens to a feature map (DPT sec. 3.2, "Read, Concatenate, Resample" with readout "project"):
    each token joined to the class token and projected back, Linear(2D -> D) + GELU; the tokens laid
    out on their grid; a 1x1 conv; then, for the coarsest map, a 3x3 conv of stride 2."""

    def __init__(self, width: int, downsample: bool):
        super().__init__()
        self.readout = nn.Linear(2 * width, width)
        self.project = nn.Conv2d(width, width, 1)
        self.resample = nn.Conv2d(width, width, 3, stride=2, padding=1) if downsample else None

    def forward(self, tokens: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
        # tokens: [B, 1 + N, D] -> [B, D, rows, columns] (or half that with the stride-2 conv)
        patches, cls = tokens[:, 1:], tokens[:, :1]
        h = F.gelu(self.readout(torch.cat([patches, cls.expand_as(patches)], dim=-1)))  # patches first, then cls
        h = self.project(h.transpose(1, 2).reshape(h.shape[0], -1, rows, columns))
        return h if self.resample is None else self.resample(h)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))) (DPT Fig. 1, right; RefineNet's RCU, Lin et al. 2017)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusion(nn.Module):
    """Fuse the coarser path with this level's features (DPT sec. 3.3): path + RCU(features), RCU,
    x2 up, 1x1 conv. The coarsest level has no path yet (coarsest=True): it starts from RCU_2 of its
    own features and has no `residual1` (the original builds one that never runs; its checkpoints
    carry the weights, which the loader sets aside)."""

    def __init__(self, features: int, coarsest: bool = False):
        super().__init__()
        self.residual1 = None if coarsest else ResidualConvUnit(features)
        self.residual2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, path: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        h = features if path is None else path + self.residual1(features)
        return self.out_conv(upsample2(self.residual2(h)))


class DepthHead(nn.Module):
    """3x3 conv to 128, x2 up (to the input's size), 3x3 conv to 32, ReLU, 1x1 conv to 1, ReLU (the
    depth model is non-negative)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(features // 2, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(upsample2(self.conv1(x)))
        return F.relu(self.conv3(F.relu(h)))


class MiDaS(nn.Module):
    """DPT-Hybrid: [B, 3, H, W] in [-1, 1] (H, W multiples of 32) -> depth [B, 1, H, W]."""

    def __init__(self, config: MiDaSConfig):
        super().__init__()
        self.config = config
        self.encoder = HybridViT(config)
        self.reassemble = nn.ModuleList([Reassemble(config.width, downsample=False),
                                         Reassemble(config.width, downsample=True)])
        in_channels = (256, 512, config.width, config.width)  # the two stem maps, the two reassembled maps
        self.project_features = nn.ModuleList(nn.Conv2d(c, config.features, 3, padding=1, bias=False)
                                              for c in in_channels)
        self.fusion = nn.ModuleList(FeatureFusion(config.features, coarsest=k == len(in_channels) - 1)
                                    for k in range(len(in_channels)))
        self.head = DepthHead(config.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"MiDaS expects an image of shape [B, 3, H, W] with H and W multiples of 32; "
                             f"got shape {tuple(x.shape)}")
        rows, columns = x.shape[2] // self.config.patch_size, x.shape[3] // self.config.patch_size
        stem_maps, hooked = self.encoder(x)
        maps = stem_maps + [reassemble(tokens, rows, columns) for reassemble, tokens in zip(self.reassemble, hooked)]
        features = [project(m) for project, m in zip(self.project_features, maps)]
        path = None
        for fusion, level in zip(reversed(self.fusion), reversed(features)):  # from H/32 up to H/2
            path = fusion(path, level)
        return self.head(path)
