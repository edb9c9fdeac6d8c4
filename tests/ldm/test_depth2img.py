"""depth2img and estimate_depth: against the ORIGINAL LatentDepth2ImageDiffusion driven as the v2
repository's scripts/gradio/depth2img.py drives it, end to end through a checkpoint in the
original layout that carries MiDaS (`depth_model.model.*`); the strength-1.0 quirk; a depth map of
one's own; a file without MiDaS; bad inputs named in one line."""

from __future__ import annotations

import gc
import json
import subprocess
from dataclasses import replace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from checkpoints_convert.keymap import midas as midas_keys
from checkpoints_convert.layout import DEPTH_PREFIX
from ldm.config import PRESETS
from ldm.pipeline import StableDiffusion
from ldm.tasks.depth2img import depth_condition, depth_image
from samplers import SAMPLERS
from tests.checkpoints_convert.test_save_original import saved_and_loaded_back
from tests.ldm.one_run import latent_and_image
from tests.ldm.tiny_models import TINY_DEPTH, TINY_MIDAS, tiny_command
from tests.reference.original_configs import FIRST_STAGE_PARAMS as FIRST_STAGE
from tests.reference.original_configs import UNET_PARAMS as ORIGINAL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity
from tokenizer import CLIPTokenizer

TOLERANCE = 1e-4  # the bound for the pipeline (full-size random UNet and MiDaS, 4 DDIM steps)
STRENGTHS = (0.5, 1.0)


def draws(seeds: list[int], latent: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """What our depth2img draws from each image's seed, in order: the posterior noise, then x_T."""
    posterior, x_T = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        posterior.append(torch.randn(latent, generator=g))
        x_T.append(torch.randn(latent, generator=g))
    return torch.stack(posterior), torch.stack(x_T)


@pytest.mark.slow  # full-size models through the original code
def test_depth2img_matches_the_original_gradio_pipeline_through_an_original_checkpoint(tmp_path):
    config, path = PRESETS["v2-depth"], tmp_path / "512-depth.safetensors"
    sd = saved_and_loaded_back("v2-depth", path, seed=7)
    assert sd.depth_model is not None

    g = torch.Generator().manual_seed(4)
    seeds, size = [21, 22], 64
    tokenizer = CLIPTokenizer(pad_with=config.text_encoder.pad_with)
    prompts, negative = ["a wooden chair in a bright room", "a stone bridge"], "blurry"
    posterior_noise, x_T = draws(seeds, (4, size // 8, size // 8))
    inputs = {"x": torch.randn(2, 5, 8, 8, generator=g), "t": torch.tensor([5, 990]),
              "context": torch.randn(2, 77, config.unet.context_dim, generator=g),
              "z": torch.randn(1, 4, 8, 8, generator=g), "tokens": tokenizer(["a horse", ""]),
              "prompt_tokens": tokenizer(prompts), "negative_tokens": tokenizer([negative] * 2),
              "depth_image": torch.rand(1, 3, size, size, generator=g) * 2 - 1,
              "depth_posterior_noise": posterior_noise, "depth_x_T": x_T}
    run = {"steps": 4, "scale": 9.0, "eta": 0.0, "strengths": list(STRENGTHS)}
    params = {"depth2img": run, "path": str(path), "report": str(tmp_path / "report.json"),
              "text": config.text_encoder.kind, "unet": {"image_size": 32, **ORIGINAL_UNET_PARAMS["v2-depth"]},
              "first_stage": FIRST_STAGE["f8"], "linear_start": config.schedule.linear_start,
              "linear_end": config.schedule.linear_end, "parameterization": config.prediction,
              "scale_factor": config.scale_factor}
    _, reference = run_original("load_saved", params, inputs)
    report = json.loads((tmp_path / "report.json").read_text())
    # Never run, so never written by us: open_clip's contrastive head and MiDaS's unused tensors.
    never_run = sorted(f"{DEPTH_PREFIX}{k}" for k in midas_keys.IGNORED)
    assert report == {"missing": sorted(never_run) + ["logit_scale", "text_projection"], "unexpected": []}

    depth = sd.estimate_depth(inputs["depth_image"])
    assert reference["depth_map"].std() > 0.05 * reference["depth_map"].abs().max() > 0
    error = relative_error(depth, reference["depth_map"])
    print(f"v2-depth depth map: {error:.2e}")
    record_parity("depth2img", "v2-depth", f"{size}x{size} -> MiDaS 384x384", "estimate_depth",
                  "original MiDaSInference on AddMiDaS (OpenCV)", error, TOLERANCE)
    assert error <= TOLERANCE
    for strength in STRENGTHS:
        ours = latent_and_image(sd.depth2img, inputs["depth_image"], prompts, negative_prompt=negative,
                                strength=strength, steps=run["steps"], guidance_scale=run["scale"], eta=run["eta"],
                                seed=seeds[0], x_T=x_T, progress=False)
        for name, output in (("depth2img_latent", "latent"), ("depth2img_image", "tensor")):
            expected = reference[f"{name}_{strength}"]
            assert expected.std() > 0.1
            error = relative_error(ours[output], expected)
            print(f"v2-depth {name} strength {strength}: {error:.2e}")
            record_parity("depth2img", "v2-depth", f"{size}x{size}, batch 2, 4 DDIM steps, strength {strength}", output,
                          "original LatentDepth2ImageDiffusion (gradio depth2img)", error, TOLERANCE)
            assert error <= TOLERANCE, (name, strength)
    del sd
    gc.collect()


@pytest.fixture(scope="module")
def tiny_depth():
    """A random model of the demo's size made a depth model (5 input channels), with a small MiDaS."""
    torch.manual_seed(0)
    return StableDiffusion(TINY_DEPTH).eval()


def count_unet_calls(sd, monkeypatch) -> list:
    calls, forward = [], type(sd.unet).forward
    monkeypatch.setattr(type(sd.unet), "forward", lambda self, x, *a: calls.append(x) or forward(self, x, *a))
    return calls


def test_strength_one_starts_from_x_T_and_runs_one_step_fewer_with_ddim(tiny_depth, monkeypatch):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    calls = count_unet_calls(tiny_depth, monkeypatch)
    tiny_depth.depth2img(image, "a cat", strength=1.0, steps=5, seed=3, x_T=x_T, output="latent", progress=False)
    assert len(calls) == 4  # t_enc = min(5, 5 - 1): the original script's cap
    assert torch.equal(calls[0][:1, :4], x_T) and torch.equal(calls[0][1:, :4], x_T)  # from x_T itself
    calls.clear()
    tiny_depth.depth2img(image, "a cat", strength=0.6, steps=5, seed=3, output="latent", progress=False)
    assert len(calls) == 3
    calls.clear()
    tiny_depth.depth2img(image, "a cat", strength=1.0, steps=5, seed=3, sampler="euler", output="latent",
                         progress=False)
    assert len(calls) == 5  # the other samplers run their whole schedule at strength 1.0


def test_the_depth_channel_is_the_map_normalised_per_image_in_both_branches(tiny_depth, monkeypatch):
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    depth = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(5)) * 7 + 3
    calls = count_unet_calls(tiny_depth, monkeypatch)
    tiny_depth.depth2img(image, ["a cat", "a dog"], depth=depth, steps=2, seed=3, output="latent", progress=False)
    expected = depth_condition(depth, (8, 8))
    assert [tuple(x.amin(dim=(1, 2, 3))) for x in (expected,)] == [(-1.0, -1.0)]
    assert torch.equal(calls[0][:, 4:], torch.cat([expected, expected]))  # [uncond; cond], the same depth
    # MiDaS's own map when no depth is given: the same path from estimate_depth's output.
    calls.clear()
    tiny_depth.depth2img(image, ["a cat", "a dog"], steps=2, seed=3, output="latent", progress=False)
    estimated = depth_condition(tiny_depth.estimate_depth(image), (8, 8))
    torch.testing.assert_close(calls[0][:2, 4:], estimated, rtol=0, atol=1e-6)


def test_estimate_depth_is_at_the_transforms_size_and_renders_to_greyscale(tiny_depth):
    depth = tiny_depth.estimate_depth(Image.new("RGB", (64, 48), (30, 200, 30)))
    assert depth.shape == (1, 1, 288, 384) and (depth >= 0).all()
    picture = depth_image(torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]]))[0]
    assert picture.mode == "L" and list(picture.tobytes()) == [0, 127, 63, 255]  # truncated, as the demo


@pytest.mark.parametrize("kwargs, words", [
    ({"depth": torch.zeros(1, 2, 8, 8)}, r"depth must be a \[1 or 1, 1, h, w\] tensor .* got \[1, 2, 8, 8\]"),
    ({"depth": torch.zeros(8, 8)}, r"depth must be a \[1 or 1, 1, h, w\] tensor"),
    ({"depth": torch.ones(1, 1, 8, 8)}, r"the depth map is constant"),
    ({"x_T": torch.zeros(1, 4, 4, 4)}, r"x_T must have shape \[1, 4, 8, 8\]"),
    ({"strength": 1.5}, r"strength=1.5: must be between 0 and 1"),
])
def test_bad_arguments_are_named(tiny_depth, kwargs, words):
    with pytest.raises(ValueError, match=words):
        tiny_depth.depth2img(torch.zeros(1, 3, 32, 32), "a cat", progress=False, **kwargs)


def test_other_models_are_refused_by_depth2img(tiny_sd):
    with pytest.raises(ValueError, match=r"depth2img cannot run the demo model: .* depth2img needs the depth model"):
        tiny_sd.depth2img(Image.new("RGB", (32, 32)), "a cat", progress=False)
    with pytest.raises(ValueError, match=r"estimate_depth|depth2img cannot run the demo model"):
        tiny_sd.estimate_depth(Image.new("RGB", (32, 32)))


def test_a_file_without_midas_loads_runs_on_a_given_depth_and_refuses_to_estimate(tiny_depth, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "demo-depth", TINY_DEPTH)
    full = tiny_depth.save_checkpoint(tmp_path / "depth.safetensors")
    tensors = load_file(full)
    assert sum(k.startswith(DEPTH_PREFIX) for k in tensors) == len(midas_keys.original_to_ours(TINY_MIDAS))
    again = StableDiffusion.from_checkpoint(full, variant="demo-depth")
    torch.testing.assert_close(again.depth_model.state_dict(), tiny_depth.depth_model.state_dict(), rtol=0, atol=0)

    save_file({k: v for k, v in tensors.items() if not k.startswith(DEPTH_PREFIX)}, tmp_path / "no-midas.safetensors")
    bare = StableDiffusion.from_checkpoint(tmp_path / "no-midas.safetensors", variant="demo-depth")
    assert bare.depth_model is None and "depth_model.encoder.cls_token" not in bare.state_dict()
    out = bare.depth2img(torch.zeros(1, 3, 32, 32), "a cat", depth=torch.rand(1, 1, 8, 8), steps=2, progress=False)
    assert out[0].size == (32, 32)
    message = r"no-midas.safetensors carries no MiDaS weights \(depth_model.model.\*\), so it cannot estimate depth"
    with pytest.raises(ValueError, match=message):
        bare.estimate_depth(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=message):
        bare.depth2img(torch.zeros(1, 3, 32, 32), "a cat", progress=False)

    partial = {k: v for k, v in tensors.items() if k != f"{DEPTH_PREFIX}scratch.layer1_rn.weight"}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(KeyError, match=r"missing 1 key\(s\): 'depth_model.model.scratch.layer1_rn.weight'"):
        StableDiffusion.from_checkpoint(tmp_path / "partial.safetensors", variant="demo-depth")


def depth2img_command(sd, tmp_path, monkeypatch, *flags) -> subprocess.CompletedProcess:
    Image.new("RGB", (48, 32), (10, 200, 10)).save(tmp_path / "room.png")
    return tiny_command(sd, tmp_path, monkeypatch, "depth2img", "--init-img", "room.png", "--ddim_steps", "3",
                        "--no-progress", "--outdir", "out", *flags)


def test_the_command_line_writes_the_samples_and_the_depth_map(tiny_depth, tmp_path, monkeypatch):
    result = depth2img_command(tiny_depth, tmp_path, monkeypatch, "--strength", "0.7", "--n_samples", "2")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out" / "samples" / "00001.png").size == (48, 32)
    depth = Image.open(tmp_path / "out" / "depth-0000.png")
    assert depth.mode == "L" and depth.size == (384, 256)  # MiDaS's input size for 48x32


def test_the_command_line_refuses_a_file_without_midas_in_one_line(tiny_depth, tmp_path, monkeypatch):
    with torch.device("meta"):
        bare = StableDiffusion(replace(TINY_DEPTH, depth_model=None))
    bare = bare.to_empty(device="cpu")
    bare.load_state_dict({k: v for k, v in tiny_depth.state_dict().items() if not k.startswith("depth_model.")})
    result = depth2img_command(bare, tmp_path, monkeypatch)
    assert result.returncode == 2
    assert "carries no MiDaS weights" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "samples").exists() or not any((tmp_path / "out" / "samples").iterdir())


def test_no_image_is_named(tiny_depth):
    with pytest.raises(TypeError, match=r"image must be a PIL image, a list of them, or a \[B, 3, H, W\] tensor, "
                                        r"got NoneType"):
        tiny_depth.depth2img(None, "a cat", progress=False)
    with pytest.raises(TypeError, match=r"got NoneType"):
        tiny_depth.estimate_depth(None)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_registered_sampler_runs_depth2img(tiny_depth, sampler):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for strength in (0.5, 1.0):
        z = tiny_depth.depth2img(image, "a cat", strength=strength, steps=4, seed=3, sampler=sampler,
                                 output="latent", progress=False)
        assert z.shape == (1, 4, 8, 8) and torch.isfinite(z).all(), (sampler, strength)
