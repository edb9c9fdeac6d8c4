"""The building blocks of the KL autoencoder's encoder and decoder (LDM, Rombach et al. 2022, sec. 3.1).

The autoencoder reuses the convolutional blocks of VQGAN (Esser et al. 2021), which come from the
DDPM UNet (Ho et al. 2020) without its timestep embedding: pre-activation residual blocks, a single
self-attention block at the lowest resolution, and strided / nearest-neighbour resampling.

These are NOT the UNet's blocks (ldm/modules/unet.py): those take a timestep embedding, these do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # The original's quirk: eps = 1e-6 here (PyTorch's default, used by the UNet, is 1e-5).
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """x + F(x), F = conv(swish(norm(conv(swish(norm(x)))))); a 1x1 conv matches widths on the skip path."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        # (The original has a Dropout here; the released autoencoders use p = 0, so it is omitted.)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        # The original's `nin_shortcut` ("network in network"): a 1x1 conv, only when widths differ.
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, H, W]
        residual = self.conv1(F.silu(self.norm1(x)))  # silu = swish: x * sigmoid(x)
        residual = self.conv2(F.silu(self.norm2(residual)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + residual


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, the channels being the head dimension.

    q, k, v and the output projection are 1x1 convolutions, as in the original, so that the
    checkpoint's [C, C, 1, 1] weights load without reshaping. A 1x1 conv is a per-position Linear.
    """

    def __init__(self, channels: int, norm_groups: int):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.to_q = nn.Conv2d(channels, channels, kernel_size=1)
        self.to_k = nn.Conv2d(channels, channels, kernel_size=1)
        self.to_v = nn.Conv2d(channels, channels, kernel_size=1)
        self.to_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.mode, self.slice_size = "sdpa", 1024  # attention.py's modes (set_attention_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        batch, channels, height, width = x.shape
        normed = self.norm(x)

        def tokens(projection: nn.Conv2d) -> torch.Tensor:
            # [B, C, H, W] -> [B, 1 head, H*W tokens, C]. Made contiguous: torch's fused CPU attention
            # kernel needs a contiguous last dimension, else SDPA falls back to the plain formula
            # and builds the whole [H*W, H*W] score matrix (measured: 520 ms -> 445 ms at 64x64).
            return projection(normed).reshape(batch, 1, channels, height * width).transpose(2, 3).contiguous()

        # softmax(q k^T / sqrt(C)) v (Vaswani et al. 2017, eq. 1), one head of width C.
        attended = attention(tokens(self.to_q), tokens(self.to_k), tokens(self.to_v), self.mode, self.slice_size)
        attended = attended.transpose(2, 3).reshape(batch, channels, height, width)
        return x + self.to_out(attended)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W] -> [B, C, H/2, W/2]
        # The original's quirk: pad ONE zero on the right and bottom only (left, right, top, bottom
        # = 0, 1, 0, 1), not one on every side; the weights were trained with this alignment.
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W] -> [B, C, 2H, 2W]
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResBlock, self-attention, ResBlock at the lowest resolution (the only attention in the VAE)."""

    def __init__(self, channels: int, norm_groups: int):
        super().__init__()
        self.res_block_1 = ResBlock(channels, channels, norm_groups)
        self.attention = AttentionBlock(channels, norm_groups)
        self.res_block_2 = ResBlock(channels, channels, norm_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, h, w] -> [B, C, h, w]
        return self.res_block_2(self.attention(self.res_block_1(x)))
