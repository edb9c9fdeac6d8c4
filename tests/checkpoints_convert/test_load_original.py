"""Whole original checkpoints, built by the ORIGINAL code with random weights, loaded by ours.

For each variant the reference subprocess builds the original UNetModel, the autoencoder, the text
encoder (transformers' CLIPTextModel for v1; the original FrozenOpenCLIPEmbedder over open_clip's
real CLIP model for v2), LitEma copies and the schedule buffers, and writes them in the original
layout in several formats (zip and legacy .ckpt, .safetensors; fp16 and fp32; with and without
EMA). Every weight is rounded to a float16-representable value first, so the fp16 and fp32 files
hold the same numbers and share one set of reference outputs. We load each file with
`StableDiffusion.from_checkpoint`, with no hint unless the test says so, and compare the UNet (also
with EMA weights), the VAE decoder and the text encoder with the original's outputs.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

from ldm.config import PRESETS
from ldm.pipeline import StableDiffusion
from tests.reference.original_configs import FIRST_STAGE_PARAMS as FIRST_STAGE
from tests.reference.original_configs import UNET_PARAMS as ORIGINAL_UNET_PARAMS
from tests.reference.original_configs import V2_V_YAML
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity
from tokenizer import CLIPTokenizer

pytestmark = pytest.mark.slow  # whole full-size checkpoints built by the original code

TOLERANCE = 1e-5
LATENT = (16, 24)
PROBE, PROBE_SHIFT = "probe.ckpt", -3.0

# variant -> (reference params, the files to write: (name, format, dtype, ema), notes)
CASES = {
    "v1": ("v1", [("a.ckpt", "zip", "fp32", True), ("b.ckpt", "legacy", "fp16", False),
                  ("c.safetensors", "safetensors", "fp16", True)]),
    # The v2 files also serve the two ways v2-v is told from v2 (the weights of v2 and v2-v have the
    # same keys and shapes): a.safetensors again under another name, with the original
    # v2-inference-v.yaml's telling fields beside it, must load as v2-v; and PROBE, without a yaml,
    # is read as v2-v by the eps/v probe (see reference_params).
    "v2": ("v2", [("a.safetensors", "safetensors", "fp32", False), ("b.ckpt", "zip", "fp16", True),
                  ("probe.ckpt", "zip", "fp16", False)]),
    "v2-inpainting": ("v2-inpainting", [("a.ckpt", "zip", "fp16", False)]),
    "v2-depth": ("v2-depth", [("a.safetensors", "safetensors", "fp32", True)]),
    "x4-upscaler": ("x4-upscaler", [("a.ckpt", "legacy", "fp32", False)]),
}


def reference_params(variant: str, case: str, folder: Path) -> dict:
    config = PRESETS[variant]
    params = {
        "unet": {"image_size": 32, **ORIGINAL_UNET_PARAMS[variant]},
        "first_stage": FIRST_STAGE["f4" if variant == "x4-upscaler" else "f8"],
        "text": config.text_encoder.kind,
        "upscaler": variant == "x4-upscaler",
        "linear_start": config.schedule.linear_start, "linear_end": config.schedule.linear_end,
        # The eps/v probe reads what a TRAINED model does at t=999; random weights say nothing. So the
        # probe is tested on a constructed case: in PROBE the output layer's bias is shifted by -3,
        # which makes mean(out - x) < -1 (read as v); an unshifted random UNet stays near 0 (eps).
        "files": [{"path": str(folder / name), "format": fmt, "dtype": dtype, "ema": ema,
                   "bias_shift": PROBE_SHIFT if name == PROBE else 0.0}
                  for name, fmt, dtype, ema in CASES[case][1]],
    }
    return params


def make_inputs(variant: str, tokenizer) -> dict[str, torch.Tensor]:
    config = PRESETS[variant]
    g = torch.Generator().manual_seed(11)
    inputs = {
        "x": torch.randn(2, config.unet.in_channels, *LATENT, generator=g),
        "t": torch.tensor([3, 999]),
        "context": torch.randn(2, 77, config.unet.context_dim, generator=g),
        "z": torch.randn(1, 4, 8, 12, generator=g),
        "tokens": tokenizer(["a photograph of an astronaut riding a horse", ""]),
    }
    if config.unet.num_classes is not None:
        inputs["y"] = torch.tensor([20, 350])
    return inputs


@pytest.fixture(scope="module", params=list(CASES))
def built(request, tmp_path_factory):
    case = request.param
    variant = CASES[case][0]
    folder = tmp_path_factory.mktemp(case.replace(" ", "_").replace("(", "").replace(")", ""))
    inputs = make_inputs(variant, CLIPTokenizer(pad_with=PRESETS[variant].text_encoder.pad_with))
    _, outputs = run_original("checkpoint", reference_params(variant, case, folder), inputs, seed=5)
    if case == "v2":
        os.link(folder / "a.safetensors", folder / "v.safetensors")
        (folder / "v.yaml").write_text(V2_V_YAML)
    yield case, variant, folder, inputs, outputs
    for file in folder.iterdir():
        file.unlink()
    gc.collect()


def test_every_file_loads_as_the_right_variant_with_the_original_outputs(built):
    case, variant, folder, inputs, reference = built
    for output in ("unet", "unet_ema", "decoded", "text"):
        assert reference[output].std() > 0.1, f"trivial reference {output}"
    for name, fmt, dtype, has_ema in CASES[case][1]:
        expected = "v2-v" if name == PROBE else variant
        for use_ema in ([False, True] if has_ema else [False]):
            sd = StableDiffusion.from_checkpoint(folder / name, device="cpu", dtype=torch.float32, use_ema=use_ema)
            assert sd.variant == expected, f"{name}: detected {sd.variant}, expected {expected}"
            unet = "unet_ema" if use_ema else "unet_shifted" if name == PROBE else "unet"
            with torch.no_grad():
                errors = {
                    unet: relative_error(sd.unet(inputs["x"], inputs["t"], inputs["context"], inputs.get("y")),
                                         reference[unet]),
                    "decoded": relative_error(sd.vae.decode(inputs["z"]), reference["decoded"]),
                    "text": relative_error(sd.text_encoder(inputs["tokens"]), reference["text"]),
                }
            for output, error in errors.items():
                print(f"{case} {name} ({fmt}, {dtype}, ema={use_ema}) {output}: {error:.2e}")
                record_parity("from_checkpoint", expected, f"{fmt} {dtype} file, latent {LATENT[0]}x{LATENT[1]}",
                              output, "original ldm checkpoint", error, TOLERANCE)
                assert error <= TOLERANCE, (name, output)
            del sd
            gc.collect()
    if case == "v2":
        sd = StableDiffusion.from_checkpoint(folder / "v.safetensors", device="cpu", dtype=torch.float32)
        assert sd.variant == "v2-v" and sd.config.prediction == "v"
        del sd
    if not any(has_ema for *_, has_ema in CASES[case][1]):
        with pytest.raises(KeyError, match="no EMA weights"):
            StableDiffusion.from_checkpoint(folder / CASES[case][1][0][0], device="cpu", use_ema=True)
