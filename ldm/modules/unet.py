"""The denoising UNet eps_theta(z_t, t, c) of latent diffusion (LDM, Rombach et al. 2022, sec. 3.3).

A ResNet-style encoder/decoder over the latent (Ronneberger et al. 2015; the DDPM UNet of Ho et
al. 2020 as refined by Dhariwal & Nichol 2021), with a SpatialTransformer after the ResBlocks of
the levels listed in `attention_resolutions`, through which the text context enters by
cross-attention. Every feature map on the way down is kept and concatenated on the way up.

Level `l` works at 1/2**l of the latent resolution with `model_channels * channel_mult[l]`
channels; `down[l]` and `up[l]` are the two halves of the same level.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig
from .attention import SpatialTransformer
from .text_transformer import embedding


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the timestep (Vaswani et al. 2017, sec. 3.5; DDPM appendix B).

    t: [B] (integer or fractional) -> [B, dim] = [cos(t * w_i), sin(t * w_i)], w_i = max_period^(-i / (dim/2)).
    The original puts the cosines first; the frequencies are computed in float32.
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class Float32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back: the original's `GroupNorm32` (fp16 safety).
    Its affine parameters are taken in float32 too, as the original's autocast takes them (and as
    torch's CPU kernel demands of a float32 input: a bfloat16 model would fail on "mixed dtype")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class TimestepMLP(nn.Module):
    """The timestep embedding's MLP: Linear, SiLU, Linear. [B, C] -> [B, 4C]."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(channels, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the timestep embedding added in between, and a skip connection.

    x: [B, C_in, H, W], time_emb: [B, E] -> [B, C_out, H, W]. Dropout is omitted: every Stable
    Diffusion config sets it to 0.
    """

    def __init__(self, in_channels: int, out_channels: int, time_embed_dim: int, norm_groups: int = 32):
        super().__init__()
        self.norm1 = Float32GroupNorm(norm_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_embed_dim, out_channels)
        self.norm2 = Float32GroupNorm(norm_groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # The original's `skip_connection`: a 1x1 conv, only when widths differ (as the VAE's ResBlock).
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(time_emb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution: [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownLevel(nn.Module):
    """One level on the way down: ResBlocks (each followed by a transformer if the level attends)."""

    def __init__(self, res_blocks: list[ResBlock], attentions: list[SpatialTransformer], downsample: Downsample | None):
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)
        self.attentions = nn.ModuleList(attentions)
        self.downsample = downsample


class UpLevel(nn.Module):
    """One level on the way up: ResBlocks over [h, skip] concatenations, transformers, upsampling."""

    def __init__(self, res_blocks: list[ResBlock], attentions: list[SpatialTransformer], upsample: Upsample | None):
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)
        self.attentions = nn.ModuleList(attentions)
        self.upsample = upsample


class MidBlock(nn.Module):
    """ResBlock, SpatialTransformer, ResBlock at the lowest resolution."""

    def __init__(self, channels: int, time_embed_dim: int, attention: SpatialTransformer, norm_groups: int):
        super().__init__()
        self.res_block_1 = ResBlock(channels, channels, time_embed_dim, norm_groups)
        self.attention = attention
        self.res_block_2 = ResBlock(channels, channels, time_embed_dim, norm_groups)

    def forward(self, h: torch.Tensor, time_emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.res_block_2(self.attention(self.res_block_1(h, time_emb), context), time_emb)


class UNet(nn.Module):
    """eps_theta (or v_theta): (x: [B, in, h, w], t: [B], context: [B, M, ctx], y: [B] | None) -> [B, out, h, w]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        time_embed_dim = 4 * c.model_channels
        self.time_embedding = TimestepMLP(c.model_channels, time_embed_dim)
        # x4 upscaler: the noise level of the low-resolution input, as a class label, added to the time embedding.
        self.class_embedding = embedding(c.num_classes, time_embed_dim) if c.num_classes is not None else None
        self.conv_in = nn.Conv2d(c.in_channels, c.model_channels, 3, padding=1)

        def transformer(channels: int, level: int | None) -> SpatialTransformer:
            heads, head_dim = c.heads_and_head_dim(channels)
            if level is None:
                to_context = c.disable_middle_self_attn
            else:
                to_context = bool(c.disable_self_attentions and c.disable_self_attentions[level])
            return SpatialTransformer(channels, heads, head_dim, c.context_dim, c.transformer_depth,
                                      c.use_linear_in_transformer, to_context, c.norm_groups)

        levels = len(c.channel_mult)
        skip_channels = [c.model_channels]  # channels of every feature map kept for the way up
        channels = c.model_channels
        self.down = nn.ModuleList()
        for level, mult in enumerate(c.channel_mult):
            attends = 2**level in c.attention_resolutions
            res_blocks, attentions = [], []
            for _ in range(c.num_res_blocks):
                res_blocks.append(ResBlock(channels, c.model_channels * mult, time_embed_dim, c.norm_groups))
                channels = c.model_channels * mult
                if attends:
                    attentions.append(transformer(channels, level))
                skip_channels.append(channels)
            downsample = Downsample(channels) if level < levels - 1 else None
            if downsample is not None:
                skip_channels.append(channels)
            self.down.append(DownLevel(res_blocks, attentions, downsample))

        self.mid = MidBlock(channels, time_embed_dim, transformer(channels, None), c.norm_groups)

        up_levels = []
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            attends = 2**level in c.attention_resolutions
            res_blocks, attentions = [], []
            for _ in range(c.num_res_blocks + 1):
                res_blocks.append(ResBlock(channels + skip_channels.pop(), c.model_channels * mult, time_embed_dim, c.norm_groups))
                channels = c.model_channels * mult
                if attends:
                    attentions.append(transformer(channels, level))
            upsample = Upsample(channels) if level > 0 else None
            up_levels.append(UpLevel(res_blocks, attentions, upsample))
        self.up = nn.ModuleList(reversed(up_levels))  # up[level], like down[level]

        self.norm_out = Float32GroupNorm(c.norm_groups, channels)
        self.conv_out = nn.Conv2d(channels, c.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        t = self._check_inputs(x, t, context, y)
        time_emb = self.time_embedding(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        if self.class_embedding is not None:
            time_emb = time_emb + self.class_embedding(y)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for i, res_block in enumerate(level.res_blocks):
                h = res_block(h, time_emb)
                if level.attentions:
                    h = level.attentions[i](h, context)
                skips.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
                skips.append(h)

        h = self.mid(h, time_emb, context)

        for level in reversed(self.up):
            for i, res_block in enumerate(level.res_blocks):
                h = res_block(torch.cat([h, skips.pop()], dim=1), time_emb)
                if level.attentions:
                    h = level.attentions[i](h, context)
            if level.upsample is not None:
                h = level.upsample(h)

        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.config.channel_mult) - 1)

    def _check_inputs(self, x, t, context, y) -> torch.Tensor:
        """Shapes are checked once here, at the boundary; returns t as a [B] tensor."""
        c, factor = self.config, self.downsampling_factor
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"UNet: x must have shape [B, {c.in_channels}, H, W], got {list(x.shape)}")
        batch, _, height, width = x.shape
        if height % factor or width % factor:
            raise ValueError(
                f"UNet: latent height and width must be multiples of {factor} (image sizes multiples of "
                f"{8 * factor} at f8), got latent {list(x.shape)}"
            )
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != c.context_dim:
            raise ValueError(f"UNet: context must have shape [{batch}, tokens, {c.context_dim}], got {list(context.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"UNet: t must be a scalar or have shape [{batch}], got {list(t.shape)}")
        if (y is None) != (c.num_classes is None):
            need = "needs class labels y of shape [B]" if c.num_classes is not None else "takes no class labels y"
            raise ValueError(f"UNet: this model {need}")
        if y is not None and tuple(y.shape) != (batch,):
            raise ValueError(f"UNet: y must have shape [{batch}], got {list(y.shape)}")
        return t
