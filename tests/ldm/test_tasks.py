"""The tasks' surface: keyword-only arguments after the prompt, and a model a task cannot serve
refused by name before any work (a meta-device model: the check needs no weights)."""

from __future__ import annotations

import inspect

import pytest
import torch
from PIL import Image

from ldm.config import PRESETS
from ldm.pipeline import StableDiffusion
from ldm.tasks.depth2img import depth2img
from ldm.tasks.img2img import img2img
from ldm.tasks.inpaint import inpaint
from ldm.tasks.txt2img import txt2img
from ldm.tasks.upscale import upscale


def test_task_arguments_after_the_prompt_are_keyword_only():
    for task, leading in ((txt2img, ["sd", "prompt"]), (img2img, ["sd", "image", "prompt"]),
                          (inpaint, ["sd", "image", "mask", "prompt"]), (depth2img, ["sd", "image", "prompt"]),
                          (upscale, ["sd", "image", "prompt"])):
        parameters = list(inspect.signature(task).parameters.values())
        assert [p.name for p in parameters[: len(leading)]] == leading
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[len(leading):]), task.__name__
    # The methods are the task functions themselves: one signature, nothing forwarded by position.
    assert StableDiffusion.txt2img is txt2img and StableDiffusion.img2img is img2img
    assert StableDiffusion.inpaint is inpaint and StableDiffusion.depth2img is depth2img
    assert StableDiffusion.upscale is upscale


@pytest.mark.parametrize("variant, served_by, inputs", [
    ("v2-inpainting", "inpaint", "9 input channels (the latent and the mask and the masked image's latent)"),
    ("v2-depth", "depth2img", "5 input channels (the latent and a MiDaS depth map)"),
    ("x4-upscaler", "upscale", "7 input channels (the latent and the low-resolution image)"),
])
def test_txt2img_and_img2img_refuse_other_tasks_models_by_name(variant, served_by, inputs):
    with torch.device("meta"):
        sd = StableDiffusion(PRESETS[variant])
    for task, call in (("txt2img", lambda: sd.txt2img("a cat", progress=False)),
                       ("img2img", lambda: sd.img2img(Image.new("RGB", (64, 64)), "a cat", progress=False))):
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert message == (f"{task} cannot run the {variant} model: its UNet takes {inputs}; it is a model for "
                           f"{served_by}. {task} needs a text-to-image model (v1, v2, v2-v or the demo model)")
        assert "\n" not in message


def test_the_command_line_refuses_them_in_one_line(monkeypatch, capsys, tmp_path):
    from ldm.cli import main, txt2img

    with torch.device("meta"):
        sd = StableDiffusion(PRESETS["v2-inpainting"])
    monkeypatch.setattr(txt2img, "load_model", lambda args: sd)  # a 9-channel checkpoint, without 3 GB
    code = main(["txt2img", "--outdir", str(tmp_path), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("python -m ldm txt2img: error: txt2img cannot run the v2-inpainting model")
    assert not (tmp_path / "samples").exists()  # refused before anything is written
