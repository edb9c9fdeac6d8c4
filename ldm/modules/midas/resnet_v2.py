"""The convolutional stem of MiDaS's hybrid ViT: ResNet-50 v2's first three stages (He et al.
2016, "Identity Mappings in Deep Residual Networks"; BiT's variant, Kolesnikov et al. 2020), with
weight-standardised convolutions and GroupNorm instead of BatchNorm, and TensorFlow's "SAME"
padding. It is timm's `resnetv2.ResNetV2(layers=(3, 4, 9), preact=False, stem_type="same",
conv_layer=StdConv2dSame)` inside `vit_base_resnet50_384`, which MiDaS DPT-Hybrid builds.

    x [B, 3, H, W] -> stem (7x7 stride 2, max-pool stride 2)  [B, 64, H/4, W/4]
      -> stage 0 (3 Bottlenecks)            [B, 256, H/4, W/4]    (MiDaS's first feature map)
      -> stage 1 (4 Bottlenecks, stride 2)  [B, 512, H/8, W/8]    (its second)
      -> stage 2 (9 Bottlenecks, stride 2)  [B, 1024, H/16, W/16] (the ViT's patches)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_EPS = 1e-5


def same_padding(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's "SAME" padding (timm layers/padding.py pad_same): the output has ceil(i / s)
    positions; the padding that takes is split with the smaller half before and the larger after
    (right and bottom). For stride 1 and an odd kernel it is the symmetric (k - 1) / 2."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class StdConv2dSame(nn.Conv2d):
    """A convolution whose weights are standardised per output channel before use (Qiao et al.
    2019, "Weight Standardization", eq. 5): w_hat = (w - mean(w)) / sqrt(var(w) + eps), the mean
    and the (biased) variance over each filter's in_channels x k x k weights; "SAME" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, eps: float = 1e-8):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # w_hat = (w - mean) / sqrt(var + eps) over each filter, computed as timm computes it: batch
        # norm in training mode over a [1, out_channels, in*k*k] view (each filter a "channel"). The
        # same formula written out (w.mean, w.var) rounds differently in the last bit, and 16 random
        # Bottlenecks amplify that to 3e-5 relative at the stem's output (2e-5 even in float64);
        # computed this way the stem is bit-exact with the original.
        w_hat = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                             momentum=0.0, eps=self.eps).reshape_as(self.weight)
        x = same_padding(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, w_hat, None, self.stride)


class GroupNormReLU(nn.GroupNorm):
    """GroupNorm (Wu & He 2018), then ReLU unless relu=False (timm's GroupNormAct)."""

    def __init__(self, channels: int, groups: int, relu: bool = True):
        super().__init__(groups, channels, eps=GROUP_NORM_EPS)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.relu else x


class Shortcut(nn.Module):
    """The projection shortcut of a stage's first block: 1x1 standardised conv (with the block's
    stride), GroupNorm without ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, eps: float):
        super().__init__()
        self.conv = StdConv2dSame(in_channels, out_channels, 1, stride, eps)
        self.norm = GroupNormReLU(out_channels, groups, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 down to out/4 channels, 3x3 (carrying the stride), 1x1 up to out; the residual added
    before the last ReLU (ResNet v1.5's order: timm's non-pre-activation Bottleneck)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, eps: float):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = StdConv2dSame(in_channels, mid, 1, eps=eps)
        self.norm1 = GroupNormReLU(mid, groups)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride, eps)
        self.norm2 = GroupNormReLU(mid, groups)
        self.conv3 = StdConv2dSame(mid, out_channels, 1, eps=eps)
        self.norm3 = GroupNormReLU(out_channels, groups, relu=False)
        # Every stage's first block projects (stage 0's too: 64 -> 256 channels at stride 1).
        self.shortcut = Shortcut(in_channels, out_channels, stride, groups, eps) if in_channels != out_channels \
            or stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        h = self.norm1(self.conv1(x))
        h = self.norm2(self.conv2(h))
        h = self.norm3(self.conv3(h))
        return F.relu(h + shortcut)


class Stem(nn.Module):
    """7x7 standardised conv stride 2, GroupNorm + ReLU, 3x3 max-pool stride 2 with "SAME" padding
    of -inf (timm's MaxPool2dSame): [B, 3, H, W] -> [B, 64, H/4, W/4]."""

    def __init__(self, width: int, groups: int, eps: float):
        super().__init__()
        self.conv = StdConv2dSame(3, width, 7, 2, eps)
        self.norm = GroupNormReLU(width, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x))
        return F.max_pool2d(same_padding(h, 3, 2, value=float("-inf")), 3, 2)


class ResNetV2Stem(nn.Module):
    """The stem and three stages; forward returns each stage's output (MiDaS reads the first two as
    feature maps, the ViT takes the third as its patches)."""

    def __init__(self, layers: tuple[int, ...], stem_width: int, groups: int, eps: float):
        super().__init__()
        self.stem = Stem(stem_width, groups, eps)
        stages, in_channels = [], stem_width
        for index, blocks in enumerate(layers):
            out_channels, stride = 256 * 2 ** index, 1 if index == 0 else 2
            stages.append(nn.Sequential(*(Bottleneck(in_channels if j == 0 else out_channels, out_channels,
                                                     stride if j == 0 else 1, groups, eps) for j in range(blocks))))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: [B, 3, H, W] -> [[B, 256, H/4, W/4], [B, 512, H/8, W/8], [B, 1024, H/16, W/16]]
        h, outputs = self.stem(x), []
        for stage in self.stages:
            h = stage(h)
            outputs.append(h)
        return outputs
