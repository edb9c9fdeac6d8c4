"""The original inference configs' parameters, written out as the original yamls give them (not
derived from ours, so that a wrong preset of ours fails the tests that use them), in one place for
every test that builds an original module.

UNET_PARAMS: unet_config.params of configs/stable-diffusion/*.yaml (use_checkpoint, image_size,
use_fp16 dropped). FIRST_STAGE_PARAMS: first_stage_config.params (v1-inference.yaml and the v2
ones for f8, x4-upscaling.yaml for f4). The small ones (SMALL_*) are not the originals' sizes but
the original classes at a size that runs in a moment, for tests of the sampler math.
"""

V1_UNET = dict(in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
               num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
               transformer_depth=1, context_dim=768, legacy=False)
V2_UNET = dict(in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
               num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
               use_linear_in_transformer=True, transformer_depth=1, context_dim=1024, legacy=False)
X4_UNET = dict(num_classes=1000, in_channels=7, out_channels=4, model_channels=256, attention_resolutions=[2, 4, 8],
               num_res_blocks=2, channel_mult=[1, 2, 2, 4], disable_self_attentions=[True, True, True, False],
               disable_middle_self_attn=False, num_heads=8, use_spatial_transformer=True, transformer_depth=1,
               context_dim=1024, legacy=False, use_linear_in_transformer=True)
UNET_PARAMS = {
    "v1": V1_UNET,
    "v2": V2_UNET,  # v2-v has the same UNet (tests/ldm/test_unet.py checks our presets agree)
    "v2-inpainting": {**V2_UNET, "in_channels": 9},
    "v2-depth": {**V2_UNET, "in_channels": 5},
    "x4-upscaler": X4_UNET,
}

FIRST_STAGE_PARAMS = {
    "f8": {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                        "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                        "attn_resolutions": [], "dropout": 0.0}},
    "f4": {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                        "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2,
                                        "attn_resolutions": [], "dropout": 0.0}},
}

# The telling fields of the original v2-inference-v.yaml (what checkpoints_convert/detect.py reads).
V2_V_YAML = """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        in_channels: 4
        context_dim: 1024
    first_stage_config:
      params:
        ddconfig:
          in_channels: 3
"""

# The original UNetModel and autoencoder at a tiny size, for the sampler parity tests.
SMALL_UNET_PARAMS = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2],
                         num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_spatial_transformer=True,
                         transformer_depth=1, context_dim=32, legacy=False)
SMALL_DDCONFIG = dict(double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                      num_res_blocks=1, attn_resolutions=[], dropout=0.0)
