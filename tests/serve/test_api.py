"""The A1111 endpoints, driven by the webuiapi client from PyPI against a real server process:
the images are the library's and the command line's, byte for byte, for the same settings."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time

import numpy as np
import requests
from PIL import Image, PngImagePlugin

from ldm import StableDiffusion
from ldm.outputs import png_bytes
from ldm.watermark import mark_for, put_watermark
from samplers import ddim_timesteps

from .conftest import DEMO, DEPTH, INPAINTING, UPSCALER, tiny_model
from .server_process import ROOT

PROMPT = "a red circle on a blue background"


def raw_images(result) -> list[bytes]:
    return [base64.b64decode(image) for image in result.json["images"]]


def test_txt2img_gives_the_bytes_of_the_command_line_and_the_pixels_of_the_library(api, models, tmp_path):
    result = api.txt2img(prompt=PROMPT, negative_prompt="green", width=64, height=64, seed=5, steps=8, batch_size=2,
                         sampler_name="Euler a", cfg_scale=7.0)  # webuiapi sends eta 1.0
    assert [image.size for image in result.images] == [(64, 64)] * 2
    info = result.info
    assert (info["seed"], info["all_seeds"], info["sampler_name"], info["sd_model_name"]) == (5, [5, 6], "Euler a",
                                                                                               "demo")
    assert info["infotexts"] == [image.info["parameters"] for image in result.images]
    assert "Seed: 6, Size: 64x64" in info["infotexts"][1] and "Sampler: Euler a" in info["infotexts"][1]

    cli = subprocess.run([sys.executable, "-m", "ldm", "txt2img", "--ckpt", str(models / DEMO), "--prompt", PROMPT,
                          "--negative-prompt", "green", "--W", "64", "--H", "64", "--seed", "5", "--n_samples", "2",
                          "--n_iter", "1", "--ddim_steps", "8", "--sampler", "euler_a", "--ddim_eta", "1.0",
                          "--scale", "7.0", "--outdir", str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert raw_images(result) == [(tmp_path / "samples" / f"0000{i}.png").read_bytes() for i in range(2)]

    sd = StableDiffusion.from_checkpoint(models / DEMO, device="cpu")
    library = sd.txt2img(PROMPT, negative_prompt="green", width=64, height=64, seed=5, n=2, steps=8,
                         sampler="euler_a", eta=1.0, guidance_scale=7.0, progress=False)
    for ours, theirs in zip(result.images, library):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
        assert np.asarray(theirs).std() > 5  # a picture, not a flat field


def test_the_sampler_and_scheduler_names_map_onto_the_registry(api, models):
    names = [s["name"] for s in api.get_samplers()]
    assert names[:2] == ["DPM++ 2M", "DPM++ SDE"] and {"Euler a", "DDIM", "PLMS", "LMS"} <= set(names)
    assert "UniPC" not in names
    assert [s["name"] for s in api.get_schedulers()] == ["automatic", "uniform", "karras"]
    sd = StableDiffusion.from_checkpoint(models / DEMO, device="cpu")
    # DPM++ 2M's own spacing is Karras's ("Automatic"); "Uniform" is k-diffusion's; the pre-1.9 name says Karras.
    for sampler, scheduler, karras in (("DPM++ 2M", "automatic", True), ("DPM++ 2M", "uniform", False),
                                       ("DPM++ 2M Karras", None, True), ("k_lms", "automatic", False)):
        result = api.txt2img(prompt=PROMPT, width=64, height=64, seed=9, steps=6, sampler_name=sampler,
                             scheduler=scheduler)
        label = "LMS" if sampler == "k_lms" else "DPM++ 2M"
        assert result.info["sampler_name"] == label
        assert result.info["extra_generation_params"] == ({"Schedule type": "Karras"} if karras else {})
        expected = sd.txt2img(PROMPT, width=64, height=64, seed=9, steps=6, sampler="lms" if label == "LMS" else
                              "dpmpp_2m", karras=karras, guidance_scale=7.0, progress=False)[0]
        assert np.array_equal(np.asarray(result.image), np.asarray(expected)), (sampler, scheduler)


def test_saved_images_are_the_returned_bytes_and_the_grid_comes_first(api, server):
    samples = server.log.parent / "out" / "samples"
    before = set(samples.iterdir()) if samples.exists() else set()
    result = api.txt2img(prompt=PROMPT, width=64, height=64, seed=11, steps=4, batch_size=2, save_images=True)
    new = sorted(set(samples.iterdir()) - before)
    assert len(new) == 2 and result.info["index_of_first_image"] == 1
    sent = raw_images(result)
    assert sent[1:] == [path.read_bytes() for path in new]
    grids = sorted((server.log.parent / "out").glob("grid-*.png"))
    assert sent[0] == grids[-1].read_bytes() and result.images[0].size == (128, 64)
    unsaved = api.txt2img(prompt=PROMPT, width=64, height=64, seed=11, steps=4, batch_size=2)
    assert raw_images(unsaved) == sent[1:] and set(samples.iterdir()) == before | set(new)
    unsent = api.txt2img(prompt=PROMPT, width=64, height=64, seed=11, steps=4, batch_size=2, save_images=True,
                         send_images=False)
    written = sorted(set(samples.iterdir()) - before - set(new))
    assert unsent.json["images"] == [] and [path.read_bytes() for path in written] == sent[1:]


def poll(api, until, timeout: float = 120):
    """Poll /progress every 50 ms until `until(progress)`; -> the answers seen."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(api.get_progress())
        if until(seen[-1]):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"progress never got there: {seen[-3:]}")


def in_background(call):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", call()))
    thread.start()
    return thread, out


def test_progress_shows_steps_and_a_preview_and_interrupt_returns_the_finished_batches(api):
    thread, out = in_background(lambda: api.txt2img(prompt=PROMPT, width=128, height=128, seed=21, steps=60,
                                                    n_iter=3, sampler_name="DDIM"))
    seen = poll(api, lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] > 3)
    assert api.interrupt() == {}
    thread.join(timeout=120)
    busy = [p for p in seen if p["state"]["job_count"]]
    assert busy and all(p["state"]["job"] == "scripts_txt2img" and p["state"]["job_count"] == 3 for p in busy)
    assert {p["state"]["sampling_steps"] for p in busy if p["state"]["sampling_step"]} == {
        len(ddim_timesteps(60))}  # 63: DDIM's steps for 60 (the original's stride)
    assert all(0 < p["progress"] <= 1 and p["eta_relative"] >= 0 for p in busy)
    progress = [p["progress"] for p in busy]
    assert progress == sorted(progress)
    previews = [p["current_image"] for p in busy if p["current_image"]]
    assert previews and Image.open(io.BytesIO(base64.b64decode(previews[-1]))).size == (128, 128)
    result = out["result"]
    assert len(result.images) == 1 and result.info["infotexts"][0].count("Seed: 21,") == 1
    idle = api.get_progress()
    assert (idle["progress"], idle["state"]["job_count"], idle["current_image"]) == (0, 0, None)


def test_skip_stops_the_current_batch_and_goes_on_with_the_next(api):
    thread, out = in_background(lambda: api.txt2img(prompt=PROMPT, width=128, height=128, seed=31, steps=40,
                                                    n_iter=2, sampler_name="Euler"))
    poll(api, lambda p: p["state"]["job_no"] == 0 and p["state"]["sampling_step"] > 3)
    assert api.skip() is None
    thread.join(timeout=120)
    result = out["result"]
    assert result.info["all_seeds"] == [31, 32] and len(result.images) == 1
    assert "Seed: 32," in result.info["infotexts"][0]


def test_inpainting_on_a_selected_inpainting_model_is_the_library_s(api, models):
    square = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    api.util_set_model(INPAINTING)  # webuiapi finds the title (with its hash) and POSTs /options
    assert api.get_options()["sd_model_checkpoint"].startswith(INPAINTING + " [")
    result = api.img2img(images=[square], mask_image=mask, prompt="a cat", width=64, height=64, steps=5, seed=3,
                         denoising_strength=1.0, inpaint_full_res=False, mask_blur=0, sampler_name="DDIM")
    assert result.info["is_using_inpainting_conditioning"] is True
    sd = tiny_model(models / INPAINTING, "demo-inpainting")
    expected = sd.inpaint(square, mask, "a cat", steps=5, seed=3, guidance_scale=7.0, eta=1.0, progress=False)[0]
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))
    blurred = api.img2img(images=[square], mask_image=mask, prompt="a cat", width=64, height=64, steps=5, seed=3,
                          denoising_strength=1.0, inpaint_full_res=False, sampler_name="DDIM")  # mask_blur 4
    assert blurred.image.size == (64, 64)
    try:
        api.img2img(images=[square], mask_image=mask, prompt="a cat", width=64, height=64, steps=5)
        raise AssertionError("inpaint_full_res (webuiapi's default true) was not refused")
    except RuntimeError as error:
        assert error.args[0] == 422 and "inpaint_full_res" in error.args[1]


def test_override_settings_runs_one_request_on_another_model_and_keeps_the_selection(api):
    square = Image.new("RGB", (64, 64), (20, 30, 200))
    mask = Image.new("L", (64, 64), 255)
    result = api.img2img(images=[square], mask_image=mask, prompt="a cat", width=64, height=64, steps=3,
                         denoising_strength=1.0, inpaint_full_res=False, override_settings={"sd_model_checkpoint":
                                                                                            INPAINTING})
    assert result.info["sd_model_name"] == "inpaint_demo-inpainting"
    assert api.get_options()["sd_model_checkpoint"].startswith(DEMO)


def test_img2img_resizes_the_init_image_and_runs_the_library_s_img2img(api, models):
    image = Image.new("RGB", (96, 80), (30, 160, 60))
    result = api.img2img(images=[image], prompt=PROMPT, width=64, height=64, steps=10, seed=4, sampler_name="DDIM",
                         denoising_strength=0.6)
    assert result.info["extra_generation_params"] == {"Denoising strength": 0.6}
    sd = StableDiffusion.from_checkpoint(models / DEMO, device="cpu")
    expected = sd.img2img(image.resize((64, 64), Image.LANCZOS), PROMPT, strength=0.6, steps=10, seed=4, eta=1.0,
                          guidance_scale=7.0, progress=False)[0]
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))


def test_img2img_on_a_depth_model_is_the_library_s_depth2img(api, models):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    api.util_set_model(DEPTH)
    result = api.img2img(images=[image], prompt=PROMPT, width=64, height=64, steps=10, seed=4, sampler_name="DDIM",
                         denoising_strength=0.7)
    sd = tiny_model(models / DEPTH, "demo-depth")
    expected = sd.depth2img(image, PROMPT, strength=0.7, steps=10, seed=4, eta=1.0, guidance_scale=7.0,
                            progress=False)[0]
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))


def test_img2img_on_the_x4_upscaler_upscales_with_its_noise_level(api, models, server):
    small = Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    api.util_set_model(UPSCALER)
    body = {"init_images": [base64.b64encode(png_bytes(small, None)).decode()], "prompt": "sharp", "width": 48,
            "height": 48, "steps": 6, "seed": 8, "sampler_name": "DDIM", "noise_level": 30}
    answer = requests.post(f"{server.url}/sdapi/v1/img2img", json=body).json()
    result = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
    sd = tiny_model(models / UPSCALER, "demo-upscaler")
    expected = sd.upscale(small, "sharp", noise_level=30, steps=6, seed=8, guidance_scale=7.0, progress=False)[0]
    assert result.size == (192, 192) and np.array_equal(np.asarray(result), np.asarray(expected))
    refused = requests.post(f"{server.url}/sdapi/v1/img2img", json={**body, "noise_level": 351})
    assert refused.status_code == 422 and "noise_level: 351: must be an int in 0..350" in refused.json()["detail"]


def test_extra_single_image_upscales_with_the_x4_model_when_it_is_loaded(api, models):
    small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert [u["name"] for u in api.get_upscalers()] == ["None", "Lanczos", "Nearest"]
    assert api.extra_single_image(image=small, upscaler_1="Lanczos", upscaling_resize=2).image.size == (128, 128)
    kept = api.extra_single_image(image=small, upscaler_1="None")
    assert np.array_equal(np.asarray(kept.image), np.asarray(small)) and kept.info == "<p></p>"
    api.util_set_model(UPSCALER)
    assert api.get_upscalers()[-1]["name"] == "SD x4 upscaler"
    result = api.extra_single_image(image=small, upscaler_1="SD x4 upscaler", upscaling_resize=4)
    assert result.info == "<p>Postprocess upscale by: 4, Postprocess upscaler: SD x4 upscaler</p>"
    sd = tiny_model(models / UPSCALER, "demo-upscaler")
    expected = sd.upscale(small, "", noise_level=20, steps=50, sampler="ddim", guidance_scale=9.0, seed=0,
                          progress=False)[0]
    expected = put_watermark(expected, mark_for(sd.config))  # 256x256: large enough to carry the mark
    assert result.image.size == (256, 256) and np.array_equal(np.asarray(result.image), np.asarray(expected))


def test_png_info_reads_our_parameters_and_a1111s(api):
    ours = api.txt2img(prompt="a cat, sitting", negative_prompt="dog", width=64, height=64, seed=7, steps=3).image
    fields = api.png_info(ours).json["parameters"]
    assert (fields["Prompt"], fields["Negative prompt"], fields["Seed"], fields["Size-1"], fields["Steps"]) == (
        "a cat, sitting", "dog", "7", "64", "3")
    text = ('a cat\nwith two lines\nNegative prompt: ugly\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, '
            'CFG scale: 7, Seed: 1, Size: 512x768, Lora hashes: "x: 1, y: 2", Version: v1.10.1')
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    answer = api.png_info(Image.open(io.BytesIO(buffer.getvalue()))).json
    assert answer["info"] == text
    assert answer["parameters"] == {"Prompt": "a cat\nwith two lines", "Negative prompt": "ugly", "Steps": "20",
                                    "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "1",
                                    "Size-1": "512", "Size-2": "768", "Lora hashes": "x: 1, y: 2",
                                    "Version": "v1.10.1"}


def test_the_models_listed_are_the_folder_s_own_files(api, server, models):
    titles = [m["title"] for m in api.get_sd_models()]
    # in walking order, not notes.txt, not the symlink out
    assert [t.split(" [")[0] for t in titles] == [UPSCALER, DEMO, DEPTH, INPAINTING]
    for name in ("escape.safetensors", "../outside.safetensors", str(models.parent / "outside.safetensors"),
                 str(models / DEMO)):
        answer = requests.post(f"{server.url}/sdapi/v1/options", json={"sd_model_checkpoint": name})
        assert answer.status_code == 404 and f"no model {name!r} here" in answer.json()["detail"]
    (models / "later.safetensors").write_bytes((models / DEMO).read_bytes())
    try:
        assert "later.safetensors" not in [m["title"] for m in api.get_sd_models()]
        assert api.refresh_checkpoints() is None
        assert "later.safetensors" in [m["title"] for m in api.get_sd_models()]
    finally:
        (models / "later.safetensors").unlink()
        api.refresh_checkpoints()


def test_png_bytes_are_what_the_writer_puts_in_a_file(tmp_path):
    from ldm.outputs import save_sample

    image = Image.new("RGB", (16, 16), (1, 2, 3))
    path = save_sample(image, tmp_path, "a\nSteps: 1")
    assert png_bytes(image, "a\nSteps: 1") == path.read_bytes()
