"""upscale: untiled, against the ORIGINAL LatentUpscaleDiffusion driven as the v2 repository's
scripts/gradio/superresolution.py drives it, end to end through a checkpoint in the original
layout; tiled, equal to the untiled run when one tile holds the input and made of the windows
asked for otherwise; padding to the UNet's multiple and cropping back; bad arguments named."""

from __future__ import annotations

import gc
import json
import subprocess

import pytest
import torch
from PIL import Image

from ldm.config import PRESETS
from ldm.pipeline import StableDiffusion
from ldm.tasks.tiles import AUTO_TILE
from ldm.tasks.upscale import tile_for
from tests.checkpoints_convert.test_save_original import saved_and_loaded_back
from tests.ldm.one_run import latent_and_image
from tests.ldm.tiny_models import TINY_UPSCALER, tiny_command
from tests.reference.original_configs import FIRST_STAGE_PARAMS as FIRST_STAGE
from tests.reference.original_configs import UNET_PARAMS as ORIGINAL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity
from tokenizer import CLIPTokenizer

TOLERANCE = 1e-4  # the bound for these pipelines (full-size random UNet, 4 DDIM steps)


@pytest.mark.slow  # a full-size model through the original code
def test_upscale_matches_the_original_gradio_pipeline_through_an_original_checkpoint(tmp_path):
    config, path = PRESETS["x4-upscaler"], tmp_path / "x4.safetensors"
    sd = saved_and_loaded_back("x4-upscaler", path, seed=7)

    g = torch.Generator().manual_seed(4)
    tokenizer = CLIPTokenizer(pad_with=config.text_encoder.pad_with)
    prompts, negative = ["a sharp photograph of a cat", "a brick wall"], "blurry"
    size, noise_level = 32, 40
    inputs = {"x": torch.randn(2, 7, 16, 16, generator=g), "t": torch.tensor([5, 990]), "y": torch.tensor([20, 300]),
              "context": torch.randn(2, 77, 1024, generator=g), "z": torch.randn(1, 4, 8, 8, generator=g),
              "tokens": tokenizer(["a horse", ""]), "prompt_tokens": tokenizer(prompts),
              "negative_tokens": tokenizer([negative] * 2),
              "upscale_image": torch.rand(1, 3, size, size, generator=g) * 2 - 1,
              "upscale_x_T": torch.randn(2, 4, size, size, generator=g),
              "upscale_noise": torch.randn(2, 3, size, size, generator=g)}
    run = {"steps": 4, "scale": 9.0, "eta": 0.0, "noise_level": noise_level}
    params = {"upscale": run, "path": str(path), "report": str(tmp_path / "report.json"), "text": "openclip",
              "unet": {"image_size": 32, **ORIGINAL_UNET_PARAMS["x4-upscaler"]}, "first_stage": FIRST_STAGE["f4"],
              "linear_start": config.schedule.linear_start, "linear_end": config.schedule.linear_end,
              "parameterization": config.prediction, "scale_factor": config.scale_factor}
    _, reference = run_original("load_saved", params, inputs)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {"missing": ["logit_scale", "text_projection"], "unexpected": []}

    ours = latent_and_image(sd.upscale, inputs["upscale_image"], prompts, noise_level=noise_level,
                            negative_prompt=negative, steps=run["steps"], guidance_scale=run["scale"], eta=run["eta"],
                            seed=3, x_T=inputs["upscale_x_T"], augmentation_noise=inputs["upscale_noise"],
                            progress=False)
    assert ours["tensor"].shape == (2, 3, 4 * size, 4 * size)
    for name, output in (("upscale_latent", "latent"), ("upscale_image", "tensor")):
        expected = reference[name]
        assert expected.std() > 0.1
        error = relative_error(ours[output], expected)
        print(f"x4-upscaler {name}: {error:.2e}")
        record_parity("upscale", "x4-upscaler", f"{size}x{size} -> {4 * size}x{4 * size}, batch 2, 4 DDIM steps",
                      output, "original LatentUpscaleDiffusion (gradio superresolution)", error, TOLERANCE)
        assert error <= TOLERANCE, name
    del sd
    gc.collect()


@pytest.fixture(scope="module")
def tiny_upscaler():
    """A random model of the demo's size (f4 VAE) made an upscaler: 7 input channels, noise-level labels."""
    torch.manual_seed(0)
    return StableDiffusion(TINY_UPSCALER).eval()


def test_an_odd_size_is_padded_with_its_edge_and_cropped_back_to_four_times(tiny_upscaler):
    image = Image.new("RGB", (13, 10), (200, 30, 30))
    out = tiny_upscaler.upscale(image, "a cat", steps=2, seed=1, progress=False)[0]
    assert out.size == (52, 40)
    latent = tiny_upscaler.upscale(image, "a cat", steps=2, seed=1, output="latent", progress=False)
    assert latent.shape[2:] == (12, 16)  # padded to the UNet's multiple (4 here; 8 for the x4 model)


def test_the_noise_level_and_the_augmentation_noise_reach_the_model(tiny_upscaler):
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    runs = {level: tiny_upscaler.upscale(image, "a cat", noise_level=level, steps=2, seed=1, output="latent",
                                         progress=False) for level in (0, 20, 350)}
    assert not torch.allclose(runs[0], runs[20]) and not torch.allclose(runs[20], runs[350])
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    given = [tiny_upscaler.upscale(image, "a cat", noise_level=100, augmentation_noise=noise * k, steps=2, seed=1,
                                   output="latent", progress=False) for k in (1, -1)]
    assert not torch.allclose(given[0], given[1])


def test_one_tile_holding_the_input_is_the_untiled_run_bit_for_bit(tiny_upscaler):
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(3)) * 2 - 1
    runs = [tiny_upscaler.upscale(image, "a cat", steps=2, seed=1, eta=0.5, output="tensor", progress=False,
                                  tile=tile) for tile in (None, 24, 64, "auto")]
    assert runs[0].shape == (1, 3, 96, 80)
    for run in runs[1:]:
        assert torch.equal(run, runs[0])


def test_a_tiled_run_evaluates_the_unet_and_the_decoder_on_the_windows(tiny_upscaler, monkeypatch):
    """A 24x20 input in 8-pixel tiles (overlap 2): 4 x 3 windows for the UNet at each step (both
    guidance branches in one batch) and for the decoder; the images differ from the untiled run's,
    the shape does not."""
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(3)) * 2 - 1
    seen = {"unet": [], "decoder": []}
    unet, decode = type(tiny_upscaler.unet).forward, type(tiny_upscaler.vae).decode
    monkeypatch.setattr(type(tiny_upscaler.unet), "forward",
                        lambda self, x, *a: seen["unet"].append(tuple(x.shape)) or unet(self, x, *a))
    monkeypatch.setattr(type(tiny_upscaler.vae), "decode",
                        lambda self, z: seen["decoder"].append(tuple(z.shape)) or decode(self, z))
    tiled = tiny_upscaler.upscale(image, "a cat", steps=2, seed=1, output="tensor", progress=False, tile=8)
    assert seen["unet"] == [(2, 7, 8, 8)] * (2 * 4 * 3) and seen["decoder"] == [(1, 4, 8, 8)] * (4 * 3)
    whole = tiny_upscaler.upscale(image, "a cat", steps=2, seed=1, output="tensor", progress=False, tile=None)
    assert tiled.shape == whole.shape == (1, 3, 96, 80)
    assert torch.isfinite(tiled).all() and not torch.allclose(tiled, whole, atol=1e-3)


def test_auto_runs_inputs_up_to_256x256_whole_and_tiles_larger_ones():
    assert tile_for("auto", 256, 256) is None and tile_for("auto", 128, 512) is None
    assert tile_for("auto", 264, 256) == AUTO_TILE == 192 and tile_for("auto", 512, 512) == 192
    assert tile_for(None, 2048, 2048) is None and tile_for(64, 32, 32) == 64


@pytest.mark.parametrize("kwargs, words", [
    ({"noise_level": 351}, r"noise_level=351: must be an int in 0..350"),
    ({"noise_level": -1}, r"noise_level=-1: must be an int in 0..350"),
    ({"augmentation_noise": torch.zeros(1, 3, 8, 8)}, r"augmentation_noise must have shape \[1, 3, 16, 16\]"),
    ({"x_T": torch.zeros(1, 4, 8, 8)}, r"x_T must have shape \[1, 4, 16, 16\]"),
    ({"tile": 6}, r"tile=6: must be None, 'auto' or a multiple of 4 of at least 8"),
    ({"tile": 4}, r"tile=4: must be None, 'auto' or a multiple of 4 of at least 8"),
    ({"tile": "big"}, r"tile='big': must be None, 'auto' or a multiple of 4"),
    ({"tile": True}, r"tile=True: must be None, 'auto' or a multiple of 4"),
])
def test_bad_arguments_are_named(tiny_upscaler, kwargs, words):
    with pytest.raises(ValueError, match=words):
        tiny_upscaler.upscale(torch.zeros(1, 3, 16, 16), "a cat", progress=False, **kwargs)


def test_other_models_are_refused_by_upscale(tiny_sd):
    with pytest.raises(ValueError, match=r"upscale cannot run the demo model: .* upscale needs the x4 upscaler"):
        tiny_sd.upscale(Image.new("RGB", (16, 16)), "a cat", progress=False)


def upscale_command(tiny_upscaler, tmp_path, monkeypatch, *flags) -> subprocess.CompletedProcess:
    Image.new("RGB", (12, 8), (10, 200, 10)).save(tmp_path / "small.png")
    return tiny_command(tiny_upscaler, tmp_path, monkeypatch, "upscale", "--init-img", "small.png", "--ddim_steps",
                        "2", "--skip_grid", "--no-progress", "--outdir", "out", *flags)


def test_the_command_line_upscales_with_an_upscaler_checkpoint(tiny_upscaler, tmp_path, monkeypatch):
    result = upscale_command(tiny_upscaler, tmp_path, monkeypatch, "--noise_level", "30", "--tile", "8")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out" / "samples" / "00000.png").size == (48, 32)


@pytest.mark.parametrize("flag, words", [
    ("6", "--tile 6: must be None, 'auto' or a multiple of 4 of at least 8"),
    ("big", "argument --tile: 'big' is not 'auto', 'none' or a number of pixels"),
])
def test_a_bad_tile_flag_gets_one_line(tiny_upscaler, tmp_path, monkeypatch, flag, words):
    result = upscale_command(tiny_upscaler, tmp_path, monkeypatch, "--tile", flag)
    assert result.returncode == 2
    assert words in result.stderr and not (tmp_path / "out" / "samples").exists()
