"""The v2 scripts' flags (Stability's scripts/txt2img.py): --steps, --repeat, --dpm, --device and
--bf16 are taken with the original's meaning; --torchscript and --ipex are refused in one line."""

from __future__ import annotations

import pytest
from PIL import Image

from ldm.cli import main

from .test_cli import run


@pytest.mark.parametrize("command", ["txt2img", "img2img", "inpaint", "depth2img", "upscale"])
@pytest.mark.parametrize("flag, words", [
    ("--torchscript", "--torchscript: not supported: the v2 script traces the UNet and text encoder with torch.jit"),
    ("--ipex", "--ipex: not supported: Intel Extension for PyTorch is not a dependency"),
])
def test_torchscript_and_ipex_are_refused_in_one_line_before_anything_runs(command, flag, words, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = {"txt2img": [], "inpaint": ["--init-img", "x.png", "--mask", "m.png"]}.get(command, ["--init-img", "x.png"])
    assert main([command, flag, *extra]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m ldm {command}: error: {words}"), lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--repeat", "0", "--from-file", "p.txt"], "--repeat 0: must be >= 1"),
    (["--repeat", "2"], "--repeat 2: repeats the prompts of --from-file"),
])
def test_a_bad_repeat_is_refused(args, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a cat\n")
    assert main(["txt2img", *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m ldm txt2img: error: {words}"), lines


def test_steps_is_ddim_steps_and_repeat_repeats_each_prompt_of_the_file(tiny_checkpoint, tmp_path):
    """The v2 script: data = [p for p in data for i in range(opt.repeat)], then batches of n_samples."""
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    result = run("txt2img", "--ckpt", str(tiny_checkpoint), "--from-file", "prompts.txt", "--repeat", "3",
                 "--n_samples", "2", "--n_iter", "1", "--steps", "2", "--outdir", "out", "--skip_grid", "--no-progress",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    texts = [Image.open(tmp_path / "out" / "samples" / f"{i:05d}.png").info["parameters"] for i in range(6)]
    assert [text.split("\n")[0] for text in texts] == ["a cat"] * 3 + ["a dog"] * 3
    assert all("Steps: 2," in text for text in texts)
    assert [text.split("Seed: ")[1].split(",")[0] for text in texts] == [str(42 + i) for i in range(6)]
    assert not (tmp_path / "out" / "samples" / "00006.png").exists()
