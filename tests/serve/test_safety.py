"""Bad requests get a 4xx that names what is wrong, and the server keeps serving; a job that fails
fails alone; --api-auth refuses a missing or wrong password; with no flags, the demo model."""

from __future__ import annotations

import base64
import io
import threading

import pytest
import requests
import webuiapi
from PIL import Image

from .server_process import ServerProcess


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


SMALL = {"width": 64, "height": 64, "steps": 2}
SQUARE = png(Image.new("RGB", (64, 64), (200, 30, 30)))
TRUNCATED = base64.b64encode(base64.b64decode(SQUARE)[:60]).decode()
INPAINT = {"init_images": [SQUARE], "mask": SQUARE, "inpaint_full_res": False, "denoising_strength": 1.0}

BAD = [  # (path, body, status, what the message must say)
    ("txt2img", {"enable_hr": True}, 422, "enable_hr: True asks for the hires fix"),
    ("txt2img", {"restore_faces": True}, 422, "restore_faces: True asks for face restoration"),
    ("txt2img", {"styles": ["cinematic"]}, 422, "styles: ['cinematic'] asks for prompt styles"),
    ("txt2img", {"script_name": "x/y/z plot"}, 422, "script_name: 'x/y/z plot' asks for scripts"),
    ("txt2img", {"alwayson_scripts": {"ControlNet": {"args": []}}}, 422, "alwayson_scripts: {'ControlNet'"),
    ("txt2img", {"subseed_strength": 0.5}, 422, "subseed_strength: 0.5 asks for variation seeds"),
    ("txt2img", {"prompt": "<lora:film:0.8> a cat"}, 422, "prompt: LoRA / hypernetwork tags"),
    ("txt2img", {"sampler_name": "UniPC"}, 422, "sampler_name: 'UniPC' is an AUTOMATIC1111 sampler this project "
                                                "does not have"),
    ("txt2img", {"sampler_name": "Eulr a"}, 422, "sampler_name: no sampler 'Eulr a'"),
    ("txt2img", {"scheduler": "Exponential"}, 422, "scheduler: 'Exponential' is an AUTOMATIC1111 scheduler"),
    ("txt2img", {"sampler_name": "DDIM", "scheduler": "Karras"}, 422, "DDIM walks timesteps"),
    ("txt2img", {"width": 4096}, 422, "width: 4096 is outside 1..2048 pixels"),
    ("txt2img", {"width": 72}, 422, "width: 72: image sizes must be positive multiples of 16"),
    ("txt2img", {"steps": 0}, 422, "steps: 0: must be an int in 1..1000"),
    ("txt2img", {"batch_size": 9}, 422, "batch_size: 9 is outside 1..8"),
    ("txt2img", {"n_iter": 101}, 422, "n_iter: 101 is outside 1..100"),
    ("txt2img", {"seed": 2**33}, 422, "seed: 8589934592: must be an int in 0.."),
    ("txt2img", {"cfg_scale": -1}, 422, "cfg_scale: -1.0: must be a finite number >= 0"),
    ("txt2img", {"steps": "many"}, 422, "'loc': ['body', 'steps']"),
    ("txt2img", {"width": None}, 422, "'loc': ['body', 'width']"),
    ("txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}}, 404,
     "override_settings.sd_model_checkpoint: no model 'nope' here"),
    ("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 2}}, 422,
     "override_settings.CLIP_stop_at_last_layers: 2: this server's value is 1"),
    ("img2img", {}, 404, "init_images: Init image not found"),
    ("img2img", {"init_images": ["%%%"]}, 422, "init_images: not valid base64"),
    ("img2img", {"init_images": [TRUNCATED]}, 422, "init_images: not a readable image"),
    ("img2img", {"init_images": [SQUARE, SQUARE]}, 422, "init_images: 2 images; send exactly one"),
    ("img2img", {"init_images": ["https://example.com/cat.png"]}, 422, "init_images: this server fetches no URLs"),
    ("img2img", {"init_images": [SQUARE], "resize_mode": 1}, 422, "resize_mode: 1 asks for resize modes"),
    ("img2img", {"init_images": [SQUARE], "denoising_strength": 1.5}, 422, "denoising_strength: 1.5: must be "
                                                                           "between 0 and 1"),
    ("img2img", {**INPAINT, "inpaint_full_res": True}, 422, "inpaint_full_res: true asks for 'Only masked'"),
    ("img2img", {**INPAINT, "denoising_strength": 0.75}, 422, "denoising_strength: 0.75: an inpainting model"),
    ("img2img", INPAINT, 422, "mask: the loaded model (demo) is not an inpainting model"),
    ("img2img", {**INPAINT, "mask_blur": -2}, 422, "mask_blur: -2: a blur radius is >= 0 pixels"),
    ("options", {"tiling": True}, 422, "options.tiling: True: this server's value is False"),
    ("options", {"no_such_option": 1}, 422, "options.no_such_option: no such option here"),
    ("options", {"show_progress_every_n_steps": -1}, 422, "a preview every N steps needs an int >= 0"),
    ("extra-single-image", {"image": SQUARE, "gfpgan_visibility": 1}, 422, "gfpgan_visibility: 1.0 asks for GFPGAN"),
    ("extra-single-image", {"image": SQUARE, "upscaler_1": "R-ESRGAN 4x+"}, 422, "upscaler_1: no upscaler"),
    ("extra-single-image", {"image": SQUARE, "upscaler_1": "SD x4 upscaler"}, 422,
     "SD x4 upscaler needs an x4-upscaler checkpoint as the loaded model"),
    ("png-info", {"image": "bm90IGFuIGltYWdl"}, 422, "image: not a readable image"),
]


@pytest.mark.parametrize("path, body, status, words", BAD, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(BAD)])
def test_a_bad_request_gets_its_4xx_naming_what_is_wrong(server, path, body, status, words):
    payload = {**SMALL, **body} if path in ("txt2img", "img2img") else body
    answer = requests.post(f"{server.url}/sdapi/v1/{path}", json=payload, timeout=120)
    assert answer.status_code == status, answer.text
    assert words in str(answer.json()["detail"]), answer.text


def test_too_large_uploads_are_refused_before_they_are_decoded(server):
    huge = Image.new("L", (5000, 5000))  # 25 M pixels, a few KB as a PNG: checked from its header
    answer = requests.post(f"{server.url}/sdapi/v1/img2img", json={**SMALL, "init_images": [png(huge)]})
    assert answer.status_code == 413 and "5000x5000 is over this server's 16777216 pixels" in answer.json()["detail"]
    body = b'{"prompt": "' + b"x" * (65 << 20) + b'"}'
    for data in (body, iter([body[i: i + (1 << 20)] for i in range(0, len(body), 1 << 20)])):  # sized, chunked
        answer = requests.post(f"{server.url}/sdapi/v1/txt2img", data=data, headers={"content-type":
                                                                                      "application/json"})
        assert answer.status_code == 413 and "over this server's 67108864 bytes" in answer.json()["detail"]
    answer = requests.post(f"{server.url}/sdapi/v1/txt2img", data=b"{not json", headers={"content-type":
                                                                                          "application/json"})
    assert answer.status_code == 422
    assert requests.post(f"{server.url}/sdapi/v1/txt2img", json=SMALL).status_code == 200  # still serving


def test_a_failing_job_fails_alone(server):
    """Three jobs queued together, the middle one failing in the worker (a size the model cannot
    take is found there): the others are answered as if it were not there."""
    answers = {}

    def post(name, body):
        answers[name] = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**SMALL, **body}, timeout=120)

    threads = [threading.Thread(target=post, args=(name, body)) for name, body in
               (("first", {"seed": 1}), ("failing", {"width": 72}), ("last", {"seed": 2}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers["failing"].status_code == 422 and "width: 72" in answers["failing"].json()["detail"]
    assert answers["first"].status_code == answers["last"].status_code == 200
    assert requests.get(f"{server.url}/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_a_model_that_does_not_load_leaves_the_previous_one(server, models):
    broken = models / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    try:
        requests.post(f"{server.url}/sdapi/v1/refresh-checkpoints")
        answer = requests.post(f"{server.url}/sdapi/v1/options", json={"sd_model_checkpoint": "broken.safetensors"})
        assert answer.status_code == 500 and "broken.safetensors" in answer.json()["errors"], answer.text
        assert requests.get(f"{server.url}/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("demo.")
        assert requests.post(f"{server.url}/sdapi/v1/txt2img", json=SMALL).status_code == 200
    finally:
        broken.unlink()
        requests.post(f"{server.url}/sdapi/v1/refresh-checkpoints")


@pytest.fixture(scope="module")
def with_auth(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("auth"), "--api-auth", "ann:s3cret:with:colons",
                            auth=("ann", "s3cret:with:colons"))
    yield process
    process.stop()


def test_api_auth_refuses_a_missing_or_wrong_password(with_auth):
    url = f"{with_auth.url}/sdapi/v1/sd-models"
    missing = requests.get(url)
    assert missing.status_code == 401 and missing.json()["detail"] == "Not authenticated"
    assert missing.headers["WWW-Authenticate"] == "Basic"
    for user, password in (("ann", "wrong"), ("bob", "s3cret:with:colons"), ("ann", "s3cret:with:colon")):
        wrong = requests.get(url, auth=(user, password))
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
    client = webuiapi.WebUIApi(port=with_auth.port, username="ann", password="s3cret:with:colons")
    assert client.txt2img(prompt="a cat", width=64, height=64, steps=2).image.size == (64, 64)


def test_with_no_flags_it_serves_the_demo_model(tmp_path):
    process = ServerProcess(tmp_path)  # only --port (the default 7860 may be taken on a test machine)
    try:
        api = webuiapi.WebUIApi(port=process.port)
        assert [m["title"] for m in api.get_sd_models()] == ["demo-model.safetensors [34115a29a7]"]
        assert api.get_options()["sd_model_checkpoint"] == "demo-model.safetensors [34115a29a7]"
        result = api.txt2img(prompt="a green square on a red background", width=64, height=64, steps=5,
                             save_images=True)
        assert [p.name for p in (tmp_path / "outputs" / "samples").iterdir()] == ["00000.png"]
        assert result.info["sd_model_name"] == "demo-model"
    finally:
        log = process.stop()
    assert "serving demo-model.safetensors [34115a29a7] on http://127.0.0.1:" in log
