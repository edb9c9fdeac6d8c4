"""Every hyper-parameter of every model variant, as frozen dataclasses and named presets.

The numbers are read off the original inference configs (configs/stable-diffusion/*.yaml of the
CompVis and Stability repositories); the field names are the original yaml's where it had one, so
a reader can hold the two side by side. There is no yaml and no registry: a preset is a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class UNetConfig:
    """The denoiser eps_theta(z_t, t, c) (LDM, Rombach et al. 2022, sec. 3.3)."""

    in_channels: int = 4  # 4 latent channels; 9 inpainting (z, mask, masked z); 5 depth; 7 upscaler
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Downsampling factors (1 = full latent resolution) at which a SpatialTransformer follows each ResBlock.
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    # Heads are given either as a count (v1: 8 heads at every width) or as channels per head (v2: 64).
    num_heads: int | None = 8
    num_head_channels: int | None = None
    transformer_depth: int = 1
    context_dim: int = 768
    use_linear_in_transformer: bool = False  # v2: Linear proj_in/out instead of 1x1 convolutions
    # Per level: the transformer's first attention attends to the context instead of itself.
    disable_self_attentions: tuple[bool, ...] | None = None
    disable_middle_self_attn: bool = False
    num_classes: int | None = None  # x4 upscaler: the noise level enters as a class label (1000)
    norm_groups: int = 32

    def heads_and_head_dim(self, channels: int) -> tuple[int, int]:
        """Attention heads and channels per head at a block of `channels` channels."""
        if self.num_head_channels is not None:
            return channels // self.num_head_channels, self.num_head_channels
        return self.num_heads, channels // self.num_heads


@dataclass(frozen=True)
class AutoencoderConfig:
    """The KL-regularised autoencoder that maps images to latents (LDM sec. 3.1)."""

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128  # the original's `ch`
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # len - 1 halvings: f8 here, f4 for (1, 2, 4)
    num_res_blocks: int = 2
    # The original's two latent widths: z_channels at the encoder's output and the decoder's input
    # (the encoder outputs 2x: mean and log-variance), embed_dim after the 1x1 moments_conv: the
    # latent the UNet sees (ModelConfig.latent_channels). Equal in every Stable Diffusion VAE.
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """A CLIP text transformer: CLIP ViT-L/14 (v1) or OpenCLIP ViT-H/14 (v2)."""

    kind: Literal["clip", "openclip"] = "clip"
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    activation: Literal["quick_gelu", "gelu"] = "quick_gelu"
    # "last": the last block's output after the final layer norm (v1).
    # "penultimate": skip the last block, then the final layer norm (v2).
    output_layer: Literal["last", "penultimate"] = "last"
    pad_with: Literal["eot", "zero"] = "eot"  # the tokenizer's padding id convention
    # Whose copy of the CLIP tokenizer the model was trained with (tokenizer/clip_tokenizer.py):
    # "hf", transformers' (v1: FrozenCLIPEmbedder), or "openclip", open_clip's (v2). They differ
    # on text with html entities beside "<" and on the special tokens written out.
    tokenizer: Literal["hf", "openclip"] = "hf"


@dataclass(frozen=True)
class ScheduleConfig:
    """The DDPM forward process: betas = linspace(sqrt(b0), sqrt(b1), T)**2 (the original "linear")."""

    num_timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012


@dataclass(frozen=True)
class NoiseAugmentationConfig:
    """The x4 upscaler's low_scale_model (x4-upscaling.yaml: ImageConcatWithNoiseAugmentation): the
    low-resolution image is noised to `noise_level` by a schedule of its own before it is joined to
    the latent, and the level is the UNet's class label; levels run 0..max_noise_level."""

    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(linear_start=0.0001, linear_end=0.02))
    max_noise_level: int = 350


@dataclass(frozen=True)
class MiDaSConfig:
    """MiDaS v3 DPT-Hybrid (Ranftl et al. 2021, "Vision Transformers for Dense Prediction"), the
    monocular depth estimator the SD 2 depth model carries as `depth_model` (v2-midas-inference.yaml:
    MiDaSInference(model_type="dpt_hybrid") -> DPTDepthModel(backbone="vitb_rn50_384")): a ResNet-50
    v2 stem, ViT-B/16 over its features, four reassembled feature maps fused from coarse to fine."""

    resnet_layers: tuple[int, ...] = (3, 4, 9)  # Bottleneck blocks per stage; stage widths 256, 512, 1024
    stem_width: int = 64
    # Weight standardisation's eps (Qiao et al. 2019): timm >= 0.4.12 divides by sqrt(var + 1e-8),
    # the form the reference (timm 0.6.13) computes; timm 0.4.5, which the weights were trained
    # with, divided by (std + 1e-5), about 1e-4 relative away (docs/math.md, "Depth").
    std_conv_eps: float = 1e-8
    norm_groups: int = 32
    image_size: int = 384  # the size the position embedding was trained at (24 x 24 patches)
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    hooks: tuple[int, int] = (8, 11)  # the blocks whose tokens become the two coarsest feature maps
    features: int = 256  # the width of the fusion path


@dataclass(frozen=True)
class ModelConfig:
    """One Stable Diffusion variant: its networks, schedule, what the UNet predicts, latent scale."""

    name: str
    unet: UNetConfig
    autoencoder: AutoencoderConfig
    text_encoder: TextEncoderConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prediction: Literal["eps", "v"] = "eps"
    scale_factor: float = 0.18215  # z = scale_factor * E(x): unit variance latents (LDM sec. 4.3.2)
    image_size: int = 512  # the size the model was trained at; the pipeline's default
    # What the model was trained to do; a txt2img model serves img2img too. The original tells it
    # by the model class: LatentDiffusion (txt2img), LatentInpaintDiffusion (inpaint: the latent,
    # mask and masked image's latent), LatentDepth2ImageDiffusion (depth2img: the latent and a depth
    # map), LatentUpscaleDiffusion (upscale: the latent and the low-resolution image).
    task: Literal["txt2img", "inpaint", "depth2img", "upscale"] = "txt2img"
    noise_augmentation: NoiseAugmentationConfig | None = None  # the upscaler's low-resolution input
    depth_model: MiDaSConfig | None = None  # the depth model's MiDaS (its depth2img estimates depth with it)

    @property
    def latent_channels(self) -> int:
        """The channels of the latent z the UNet denoises (the autoencoder's embed_dim)."""
        return self.autoencoder.embed_dim


CLIP_VIT_L_TEXT = TextEncoderConfig()
OPENCLIP_VIT_H_TEXT = TextEncoderConfig(
    kind="openclip", width=1024, layers=24, heads=16, activation="gelu",
    output_layer="penultimate", pad_with="zero", tokenizer="openclip",
)
V1_UNET = UNetConfig()
V2_UNET = UNetConfig(
    num_heads=None, num_head_channels=64, context_dim=1024, use_linear_in_transformer=True
)
F8_AUTOENCODER = AutoencoderConfig()

V1 = ModelConfig("v1", V1_UNET, F8_AUTOENCODER, CLIP_VIT_L_TEXT)
V2 = ModelConfig("v2", V2_UNET, F8_AUTOENCODER, OPENCLIP_VIT_H_TEXT)
V2_V = ModelConfig("v2-v", V2_UNET, F8_AUTOENCODER, OPENCLIP_VIT_H_TEXT, prediction="v", image_size=768)
# SD 1.5 inpainting (v1-inpainting-inference.yaml: LatentInpaintDiffusion, conditioning_key hybrid).
V1_INPAINTING = ModelConfig("v1-inpainting", replace(V1_UNET, in_channels=9), F8_AUTOENCODER, CLIP_VIT_L_TEXT,
                            task="inpaint")
V2_INPAINTING = ModelConfig(
    "v2-inpainting", replace(V2_UNET, in_channels=9), F8_AUTOENCODER, OPENCLIP_VIT_H_TEXT, task="inpaint"
)
V2_DEPTH = ModelConfig(
    "v2-depth", replace(V2_UNET, in_channels=5), F8_AUTOENCODER, OPENCLIP_VIT_H_TEXT, task="depth2img",
    depth_model=MiDaSConfig(),
)
X4_UPSCALER = ModelConfig(
    "x4-upscaler",
    UNetConfig(
        in_channels=7, model_channels=256, channel_mult=(1, 2, 2, 4), attention_resolutions=(2, 4, 8),
        num_heads=8, context_dim=1024, use_linear_in_transformer=True,
        disable_self_attentions=(True, True, True, False), num_classes=1000,
    ),
    AutoencoderConfig(channel_mult=(1, 2, 4)),
    OPENCLIP_VIT_H_TEXT,
    schedule=ScheduleConfig(linear_start=0.0001, linear_end=0.02),
    prediction="v",
    scale_factor=0.08333,
    image_size=512,  # output size; the input is 128x128 (latents 128x128 at f4)
    task="upscale",
    noise_augmentation=NoiseAugmentationConfig(),
)

# The project's own small model (trained by `python -m ldm train-demo`, shipped with the package):
# the same classes at a size a laptop CPU trains in an hour. 64x64 images, f4 latents of 16x16.
DEMO = ModelConfig(
    "demo",
    UNetConfig(model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(2, 4),
               num_heads=4, context_dim=96),
    AutoencoderConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, norm_groups=16),
    TextEncoderConfig(width=96, layers=3, heads=4, tokenizer="openclip"),  # the flavour it was trained with
    image_size=64,
)

PRESETS: dict[str, ModelConfig] = {
    config.name: config for config in (V1, V2, V2_V, V1_INPAINTING, V2_INPAINTING, V2_DEPTH, X4_UPSCALER, DEMO)
}
