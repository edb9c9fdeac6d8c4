"""inpaint: against the ORIGINAL LatentInpaintDiffusion driven as the v2 repository's
scripts/gradio/inpainting.py drives it, end to end through a checkpoint in the original layout;
and every bad mask refused (or binarised) with one clear line, before any work."""

from __future__ import annotations

import gc
import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from ldm.config import PRESETS
from ldm.pipeline import StableDiffusion
from tests.checkpoints_convert.test_save_original import saved_and_loaded_back
from tests.ldm.one_run import latent_and_image
from tests.ldm.tiny_models import TINY_INPAINTING, tiny_command
from tests.ldm_command import run_ldm
from tests.reference.original_configs import FIRST_STAGE_PARAMS as FIRST_STAGE
from tests.reference.original_configs import UNET_PARAMS as ORIGINAL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity
from tokenizer import CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4  # the bound for these pipelines (full-size random UNet, 4 DDIM steps)
ORIGINAL_UNET = {"v1-inpainting": {**ORIGINAL_UNET_PARAMS["v1"], "in_channels": 9},
                 "v2-inpainting": ORIGINAL_UNET_PARAMS["v2-inpainting"]}


def inpaint_inputs(generator: torch.Generator, seeds: list[int], size: int = 64) -> dict[str, torch.Tensor]:
    """An image, a grey-edged mask (binarised by both sides), x_T, and the masked image's posterior
    noise exactly as our inpaint draws it from each seed's generator (after that image's x_T)."""
    image = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, size // 4: 3 * size // 4, size // 8: size // 2] = 1.0
    mask[:, :, 0, :] = 0.7  # a grey row: >= 0.5, repainted
    latent = (4, size // 8, size // 8)
    x_T = torch.stack([torch.randn(latent, generator=torch.Generator().manual_seed(s)) for s in seeds])
    noise = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        torch.randn(latent, generator=g)
        noise.append(torch.randn(latent, generator=g))
    return {"inpaint_image": image, "inpaint_mask": mask, "inpaint_x_T": x_T,
            "inpaint_masked_noise": torch.stack(noise)}


@pytest.mark.slow  # full-size models through the original code
@pytest.mark.parametrize("variant", ["v2-inpainting", "v1-inpainting"])
def test_inpaint_matches_the_original_gradio_pipeline_through_an_original_checkpoint(tmp_path, variant):
    config, path = PRESETS[variant], tmp_path / "inpainting.safetensors"
    sd = saved_and_loaded_back(variant, path, seed=5)

    g = torch.Generator().manual_seed(2)
    seeds = [11, 12]
    tokenizer = CLIPTokenizer(pad_with=config.text_encoder.pad_with)
    prompts, negative = ["a red fox sitting on a bench", "a bowl of fruit"], "blurry"
    inputs = {"x": torch.randn(2, 9, 8, 8, generator=g), "t": torch.tensor([5, 990]),
              "context": torch.randn(2, 77, config.unet.context_dim, generator=g),
              "z": torch.randn(1, 4, 8, 8, generator=g), "tokens": tokenizer(["a horse", ""]),
              "prompt_tokens": tokenizer(prompts), "negative_tokens": tokenizer([negative] * 2)}
    inputs |= inpaint_inputs(g, seeds)
    run = {"steps": 4, "scale": 7.5, "eta": 0.0}
    params = {"inpaint": run, "path": str(path), "report": str(tmp_path / "report.json"),
              "text": config.text_encoder.kind, "unet": {"image_size": 32, **ORIGINAL_UNET[variant]},
              "first_stage": FIRST_STAGE["f8"], "linear_start": config.schedule.linear_start,
              "linear_end": config.schedule.linear_end, "parameterization": config.prediction,
              "scale_factor": config.scale_factor}
    _, reference = run_original("load_saved", params, inputs)
    report = json.loads((tmp_path / "report.json").read_text())
    expected_missing = ["logit_scale", "text_projection"] if config.text_encoder.kind == "openclip" else []
    assert report == {"missing": expected_missing, "unexpected": []}

    with pytest.warns(UserWarning, match="the mask has grey values; it was binarised at 0.5"):
        ours = latent_and_image(sd.inpaint, inputs["inpaint_image"], inputs["inpaint_mask"], prompts,
                                negative_prompt=negative, steps=run["steps"], guidance_scale=run["scale"],
                                eta=run["eta"], seed=seeds[0], x_T=inputs["inpaint_x_T"], progress=False)
    for name, output in (("inpaint_latent", "latent"), ("inpaint_image", "tensor")):
        expected = reference[name]
        assert expected.std() > 0.1
        error = relative_error(ours[output], expected)
        print(f"{variant} {name}: {error:.2e}")
        record_parity("inpaint", variant, "64x64 image, batch 2, 4 DDIM steps", output,
                      "original LatentInpaintDiffusion (gradio inpainting)", error, TOLERANCE)
        assert error <= TOLERANCE, name
    del sd
    gc.collect()


# -- bad masks, on a random model of the demo's size with 9 input channels ----------------------------

@pytest.fixture(scope="module")
def tiny_inpainting():
    torch.manual_seed(0)
    return StableDiffusion(TINY_INPAINTING).eval()


def test_every_sampler_inpaints_and_the_kept_part_shows_through(tiny_inpainting):
    """The masked image's latent reaches the UNet: a different kept part, a different result."""
    from samplers import SAMPLERS

    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    red, blue = Image.new("RGB", (64, 64), (220, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 220))
    for name in SAMPLERS:
        runs = [tiny_inpainting.inpaint(image, mask, "a cat", sampler=name, steps=3, seed=1, output="latent",
                                        progress=False) for image in (red, blue)]
        assert torch.isfinite(runs[0]).all() and not torch.allclose(runs[0], runs[1]), name


@pytest.mark.parametrize("mask, words", [
    (Image.new("L", (32, 64), 255), r"the mask is 32x64 but the image 64x64: give a mask of the image's size"),
    (Image.new("L", (64, 64), 0), r"the mask has no white pixel \(>= 0.5\), so there is nothing to repaint"),
    (Image.new("RGBA", (64, 64), (255, 255, 255, 0)), r"the mask \(RGBA\) has transparent pixels"),
    (torch.ones(1, 3, 64, 64), r"mask tensor must have shape \[B, 1, H, W\]"),
])
def test_a_bad_mask_is_refused_with_one_clear_line(tiny_inpainting, mask, words):
    with pytest.raises(ValueError, match=words):
        tiny_inpainting.inpaint(Image.new("RGB", (64, 64)), mask, "a cat", progress=False)


def test_an_opaque_rgba_or_grey_mask_is_taken_and_a_grey_one_binarised_with_a_warning(tiny_inpainting):
    image = Image.new("RGB", (64, 64), (10, 200, 10))
    white = tiny_inpainting.inpaint(image, Image.new("L", (64, 64), 255), "a cat", steps=2, seed=3, output="latent",
                                    progress=False)
    rgba = tiny_inpainting.inpaint(image, Image.new("RGBA", (64, 64), (255, 255, 255, 255)), "a cat", steps=2,
                                   seed=3, output="latent", progress=False)
    with pytest.warns(UserWarning, match="the mask has grey values; it was binarised at 0.5"):
        grey = tiny_inpainting.inpaint(image, Image.new("L", (64, 64), 200), "a cat", steps=2, seed=3,
                                       output="latent", progress=False)
    assert white.abs().max() > 0.1 and torch.equal(white, rgba) and torch.equal(white, grey)


def test_txt2img_models_are_refused_by_inpaint_and_inpainting_models_by_txt2img(tiny_sd, tiny_inpainting):
    with pytest.raises(ValueError, match=r"inpaint cannot run the demo model: .* inpaint needs an inpainting model"):
        tiny_sd.inpaint(Image.new("RGB", (64, 64)), Image.new("L", (64, 64), 255), "a cat", progress=False)
    with pytest.raises(ValueError, match=r"txt2img cannot run the demo-inpainting model"):
        tiny_inpainting.txt2img("a cat", progress=False)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_ldm(*args, cwd=cwd)


def test_the_command_line_refuses_a_bad_mask_before_the_model_loads(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "image.png")
    Image.new("L", (64, 32), 255).save(tmp_path / "small.png")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    for mask, words in (("small.png", "--mask small.png: the mask is 64x32 but the image 64x64"),
                        ("black.png", "--mask black.png: the mask has no white pixel"),
                        ("missing.png", "--mask missing.png: no such file")):
        result = cli("inpaint", "--init-img", "image.png", "--mask", mask, cwd=tmp_path)  # demo: never loaded
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and words in lines[-1] and "Traceback" not in result.stderr, result.stderr


def test_the_command_line_inpaints_with_an_inpainting_checkpoint(tiny_inpainting, tmp_path, monkeypatch):
    """A demo-sized inpainting model, registered as a preset before the command line's main (no
    full-size model: the command's own wiring is what is tested)."""
    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "image.png")
    mask = Image.new("L", (64, 64))
    mask.paste(255, (0, 0, 32, 32))
    mask.save(tmp_path / "mask.png")
    result = tiny_command(tiny_inpainting, tmp_path, monkeypatch, "inpaint", "--init-img", "image.png", "--mask",
                          "mask.png", "--ddim_steps", "2", "--skip_grid", "--no-progress", "--outdir", "out")
    assert result.returncode == 0, result.stderr
    saved = Image.open(tmp_path / "out" / "samples" / "00000.png")
    assert saved.size == (64, 64) and "Sampler: DDIM" in saved.info["parameters"]
