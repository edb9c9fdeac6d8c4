"""The hybrid ViT-B/16 encoder of MiDaS DPT-Hybrid (Dosovitskiy et al. 2021, "An Image is Worth
16x16 Words", sec. 3.1 "Hybrid Architecture"): the ResNet stem's 1/16-scale features, each
position a token (a 1x1 convolution to the width), a class token in front, a learned position
embedding, twelve pre-LayerNorm transformer blocks. timm's `vit_base_resnet50_384` as MiDaS's
`forward_flex` runs it (midas/vit.py): the position embedding, trained on a 24 x 24 grid, is
resized to the input's grid at every call, so any size divisible by 32 goes in.

    x [B, 3, H, W] -> stem: [B, 256, H/4, W/4], [B, 512, H/8, W/8], [B, 1024, H/16, W/16]
      -> tokens [B, 1 + N, 768], N = H/16 * W/16 -> blocks; the outputs of blocks 8 and 11 are kept
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldm.config import MiDaSConfig

from .resnet_v2 import ResNetV2Stem

LAYER_NORM_EPS = 1e-6  # timm's ViT: partial(nn.LayerNorm, eps=1e-6)


class SelfAttention(nn.Module):
    """Multi-head self-attention, softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1), q, k, v
    from one fused projection whose rows are [q; k; v] (timm's `attn.qkv`)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, D] -> [B, N, D]
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d]
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    """fc2(GELU(fc1(x))), the exact (erf) GELU."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)) (ViT eq. 2-3)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attention = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(width, mlp_ratio * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resized_position_embedding(embedding: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """The class token's embedding, then the grid's, resized bilinearly (align_corners=False) from
    its trained square grid to rows x columns (MiDaS vit.py _resize_pos_embed): [1, 1 + g*g, D] ->
    [1, 1 + rows*columns, D]. At the trained size it is the embedding itself."""
    cls, grid = embedding[:, :1], embedding[0, 1:]
    side = int(grid.shape[0] ** 0.5)
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, columns), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, rows * columns, -1)], dim=1)


class HybridViT(nn.Module):
    """ResNet stem, patch projection, class token, position embedding, transformer blocks."""

    def __init__(self, config: MiDaSConfig):
        super().__init__()
        self.config = config
        self.resnet = ResNetV2Stem(config.resnet_layers, config.stem_width, config.norm_groups, config.std_conv_eps)
        stem_channels = 256 * 2 ** (len(config.resnet_layers) - 1)
        self.patch_projection = nn.Conv2d(stem_channels, config.width, 1)
        grid = config.image_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + grid * grid, config.width))
        self.blocks = nn.ModuleList(Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x [B, 3, H, W] -> (the stem's first two stage outputs, the tokens [B, 1 + N, D] after
        each block in config.hooks)."""
        features = self.resnet(x)
        rows, columns = x.shape[2] // self.config.patch_size, x.shape[3] // self.config.patch_size
        tokens = self.patch_projection(features[-1]).flatten(2).transpose(1, 2)  # [B, N, D], row by row
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + resized_position_embedding(self.position_embedding, rows, columns)
        hooked = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.config.hooks:
                hooked.append(tokens)
            if index == max(self.config.hooks):
                break  # the blocks after the last hook (none in DPT-Hybrid) would change nothing read
        return features[:2], hooked
