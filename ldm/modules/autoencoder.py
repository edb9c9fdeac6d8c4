"""The KL-regularised autoencoder that moves Stable Diffusion between pixels and latents.

LDM (Rombach et al. 2022), sec. 3.1: an encoder E maps an image x in [-1, 1]^{H x W x 3} to a
latent z = E(x) of size h x w x c with h = H/f, w = W/f (f = 8 for Stable Diffusion, 4 for the x4
upscaler), and a decoder D maps it back, x ~ D(z). The "KL" variant makes E a diagonal Gaussian
q(z|x) = N(mean, diag(std^2)) pulled towards N(0, I) by a small KL penalty (a VAE, Kingma & Welling
2014), which keeps the latent space from drifting to arbitrary scales.

Everything here works on the autoencoder's own, UNSCALED latents: the pipeline multiplies by the
model's scale_factor (0.18215 for f8) after encoding and divides by it before decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AutoencoderConfig
from .vae_blocks import Downsample, MidBlock, ResBlock, Upsample, group_norm


class EncoderLevel(nn.Module):
    """One resolution of the encoder: ResBlocks at one width, then (except at the last) a halving."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, norm_groups: int,
                 downsample: bool):
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, norm_groups)
            for i in range(num_res_blocks)
        )
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, H/2, W/2] (H, W at the last level)
        for block in self.res_blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class DecoderLevel(nn.Module):
    """One resolution of the decoder: ResBlocks at one width, then (except at the last) a doubling."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, norm_groups: int,
                 upsample: bool):
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, norm_groups)
            for i in range(num_res_blocks)
        )
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, 2H, 2W] (H, W at the last level)
        for block in self.res_blocks:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """E: image -> the moments (mean, log-variance) of q(z|x), at 1/f of the image's resolution."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        groups = config.norm_groups
        self.conv_in = nn.Conv2d(config.in_channels, config.base_channels, kernel_size=3, padding=1)
        self.levels = nn.ModuleList()
        in_width = config.base_channels
        for i, width in enumerate(widths):
            is_last = i == len(widths) - 1
            self.levels.append(EncoderLevel(in_width, width, config.num_res_blocks, groups, downsample=not is_last))
            in_width = width
        self.mid = MidBlock(widths[-1], groups)
        self.norm_out = group_norm(widths[-1], groups)
        # Twice the latent channels: the mean and the log-variance of each latent entry.
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.z_channels, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # image: [B, 3, H, W] -> moments [B, 2 * z_channels, H/f, W/f]
        x = self.conv_in(image)
        for level in self.levels:
            x = level(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """D: latent -> image, the encoder's mirror with one more ResBlock per level."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        groups = config.norm_groups
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], kernel_size=3, padding=1)
        self.mid = MidBlock(widths[-1], groups)
        # Levels in the order they run: lowest resolution (widest) first. The original indexes them
        # the other way round (its `up.0` runs last); the key map does the renumbering.
        self.levels = nn.ModuleList()
        in_width = widths[-1]
        for i, width in enumerate(reversed(widths)):
            is_last = i == len(widths) - 1
            self.levels.append(DecoderLevel(in_width, width, config.num_res_blocks + 1, groups, upsample=not is_last))
            in_width = width
        self.norm_out = group_norm(widths[0], groups)
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: [B, z_channels, h, w] -> image [B, 3, h*f, w*f]
        x = self.mid(self.conv_in(z))
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), built from the encoder's moments [B, 2D, h, w]."""

    def __init__(self, moments: torch.Tensor):
        # moments: [B, 2D, h, w] -> mean, logvar, std: [B, D, h, w] each
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        # The original's quirk: the log-variance is clamped to [-30, 20] before anything uses it,
        # so std lies in [exp(-15), exp(10)].
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)  # the original's form, not sqrt(exp(logvar))

    def mode(self) -> torch.Tensor:
        """The most likely latent, the mean. (The original img2img draws `sample()` instead.)"""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I): the reparameterisation trick (Kingma & Welling 2014).

        eps is drawn in float32 with torch.randn on `generator`'s device (on the CPU when no
        generator is given, from the global RNG, as the original does), then moved to the mean's
        device and dtype. The same generator seed thus gives the same latent on every device.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * eps.to(device=self.mean.device, dtype=self.mean.dtype)


class AutoencoderKL(nn.Module):
    """The autoencoder of LDM sec. 3.1: `encode(image) -> DiagonalGaussian`, `decode(z) -> image`."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # 1x1 convs between the encoder/decoder's latent width and the latent the UNet sees
        # (embed_dim). The original calls them quant_conv / post_quant_conv, names left over from
        # VQGAN: nothing is quantised in the KL model.
        self.moments_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, kernel_size=1)
        self.latent_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    def encode(self, image: torch.Tensor) -> DiagonalGaussian:
        # image: [B, in_channels, H, W] in [-1, 1], H and W multiples of f -> q(z|x) over [B, embed_dim, H/f, W/f]
        f = self.config.downsampling_factor
        shape = tuple(image.shape)
        if image.ndim != 4 or shape[1] != self.config.in_channels or shape[2] % f or shape[3] % f:
            raise ValueError(
                f"AutoencoderKL.encode expects an image of shape [B, {self.config.in_channels}, H, W] "
                f"with H and W multiples of {f}; got shape {shape}"
            )
        return DiagonalGaussian(self.moments_conv(self.encoder(image)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # z: [B, embed_dim, h, w] (unscaled) -> image [B, out_channels, h*f, w*f], roughly in [-1, 1]
        if z.ndim != 4 or z.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"AutoencoderKL.decode expects latents of shape [B, {self.config.embed_dim}, h, w]; "
                f"got shape {tuple(z.shape)}"
            )
        return self.decoder(self.latent_conv(z))
