"""MiDaS DPT-Hybrid's key table: original `depth_model.model.*` names (prefix removed) -> ours
(ldm/modules/midas/).

What moves, and why:
- `pretrained.model.patch_embed.backbone.*` (timm's ResNetV2) -> `encoder.resnet.*`:
  `stem.conv/norm` -> `resnet.stem.conv/norm`, `stages.{s}.blocks.{j}` -> `stages.{s}.{j}`,
  `downsample` -> `shortcut` (a stage's first block projects its input)
- `pretrained.model.patch_embed.proj` -> `encoder.patch_projection`; `cls_token`, `pos_embed` ->
  `encoder.cls_token`, `encoder.position_embedding`; `blocks.{i}.attn` -> `encoder.blocks.{i}.attention`
- `pretrained.act_postprocess{3,4}` -> `reassemble.{0,1}`: `.0.project.0` (Linear) -> `readout`,
  `.3` (1x1 conv) -> `project`, `.4` (stride-2 conv of the coarsest map) -> `resample`
- `scratch.layer{k}_rn` -> `project_features.{k-1}`; `scratch.refinenet{k}` -> `fusion.{k-1}` with
  `resConfUnit{u}` -> `residual{u}`; `scratch.output_conv.{0,2,4}` -> `head.conv{1,2,3}`
No tensor changes shape. Three groups are in every file but never run (IGNORED below).
"""

from __future__ import annotations

from ldm.config import MiDaSConfig

PARAMS = ("weight", "bias")
BACKBONE = "pretrained.model.patch_embed.backbone."
VIT = "pretrained.model."

# In the files, never run: the ViT's final LayerNorm (MiDaS discards the tokens after it) and its
# ImageNet classifier (timm builds the whole model), and the coarsest fusion block's first residual
# unit (it has no coarser path to fuse: DPT's `refinenet4(layer_4_rn)` takes one input).
IGNORED = frozenset(
    [f"{VIT}norm.{p}" for p in PARAMS] + [f"{VIT}head.{p}" for p in PARAMS]
    + [f"scratch.refinenet4.resConfUnit1.conv{c}.{p}" for c in (1, 2) for p in PARAMS]
)


# Inside one Bottleneck of the ResNet stem (suffixes: original -> ours); a stage's first block adds
# its projection shortcut.
BOTTLENECK = {f"conv{i}.weight": f"conv{i}.weight" for i in (1, 2, 3)} | {
    f"norm{i}.{p}": f"norm{i}.{p}" for i in (1, 2, 3) for p in PARAMS}
BOTTLENECK_SHORTCUT = {"downsample.conv.weight": "shortcut.conv.weight"} | {
    f"downsample.norm.{p}": f"shortcut.norm.{p}" for p in PARAMS}
# Inside one ViT block.
VIT_BLOCK = {f"{o}.{p}": f"{n}.{p}" for o, n in {
    "norm1": "norm1", "attn.qkv": "attention.qkv", "attn.proj": "attention.proj", "norm2": "norm2",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}.items() for p in PARAMS}


def original_to_ours(config: MiDaSConfig) -> dict[str, str]:
    """Every key of the original DPTDepthModel's state dict that is run -> the same tensor's key in ours."""
    table = {f"{BACKBONE}stem.conv.weight": "encoder.resnet.stem.conv.weight"}
    table |= {f"{BACKBONE}stem.norm.{p}": f"encoder.resnet.stem.norm.{p}" for p in PARAMS}
    for s, blocks in enumerate(config.resnet_layers):
        for j in range(blocks):
            inside = BOTTLENECK | (BOTTLENECK_SHORTCUT if j == 0 else {})  # every stage's first block projects
            table |= {f"{BACKBONE}stages.{s}.blocks.{j}.{o}": f"encoder.resnet.stages.{s}.{j}.{n}"
                      for o, n in inside.items()}
    table |= {f"{VIT}patch_embed.proj.{p}": f"encoder.patch_projection.{p}" for p in PARAMS}
    table |= {f"{VIT}cls_token": "encoder.cls_token", f"{VIT}pos_embed": "encoder.position_embedding"}
    for i in range(config.layers):
        table |= {f"{VIT}blocks.{i}.{o}": f"encoder.blocks.{i}.{n}" for o, n in VIT_BLOCK.items()}
    for ours, original in enumerate(("pretrained.act_postprocess3", "pretrained.act_postprocess4")):
        parts = {"0.project.0": "readout", "3": "project"} | ({"4": "resample"} if ours == 1 else {})
        table |= {f"{original}.{o}.{p}": f"reassemble.{ours}.{n}.{p}" for o, n in parts.items() for p in PARAMS}
    for k in range(1, 5):
        table[f"scratch.layer{k}_rn.weight"] = f"project_features.{k - 1}.weight"  # no bias
        table |= {f"scratch.refinenet{k}.out_conv.{p}": f"fusion.{k - 1}.out_conv.{p}" for p in PARAMS}
        table |= {f"scratch.refinenet{k}.resConfUnit{u}.conv{c}.{p}": f"fusion.{k - 1}.residual{u}.conv{c}.{p}"
                  for u in (1, 2) for c in (1, 2) for p in PARAMS
                  if f"scratch.refinenet{k}.resConfUnit{u}.conv{c}.{p}" not in IGNORED}
    for o, n in (("0", "conv1"), ("2", "conv2"), ("4", "conv3")):
        table |= {f"scratch.output_conv.{o}.{p}": f"head.{n}.{p}" for p in PARAMS}
    return table
