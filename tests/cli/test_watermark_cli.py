"""The watermark on the command line: the generation commands mark by default (--no_watermark opts
out), and `python -m ldm watermark` reads marks and puts them into existing images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ldm import watermark as W
from ldm.cli import main

from .test_cli import run


def test_samples_and_grid_carry_the_mark_unless_no_watermark(tiny_checkpoint, tmp_path):
    common = ["txt2img", "--ckpt", str(tiny_checkpoint), "--prompt", "a cat", "--ddim_steps", "2", "--n_iter", "1",
              "--n_samples", "1", "--H", "256", "--W", "256", "--seed", "3", "--no-progress"]
    marked_run = run(*common, "--outdir", "marked", cwd=tmp_path)
    plain_run = run(*common, "--outdir", "plain", "--no_watermark", cwd=tmp_path)
    assert marked_run.returncode == 0 and plain_run.returncode == 0, marked_run.stderr + plain_run.stderr
    assert "watermark" not in marked_run.stderr.lower()  # 256x256: nothing to report
    mark = W.MARKS["demo"]
    for name in ("samples/00000.png", "grid-0000.png"):  # the grid of one image is that image, marked once
        plain, marked = (Image.open(tmp_path / folder / name) for folder in ("plain", "marked"))
        assert not np.array_equal(np.asarray(plain), np.asarray(marked))
        assert np.array_equal(np.asarray(marked), W.encode(np.asarray(plain), mark))
    plain, marked = (Image.open(tmp_path / folder / "samples/00000.png").info["parameters"]
                     for folder in ("plain", "marked"))
    assert marked == plain + ", Watermark: ldm-demo" and "Watermark" not in plain


def test_images_too_small_carry_no_mark_and_the_run_says_so_once(tiny_checkpoint, tmp_path):
    result = run("txt2img", "--ckpt", str(tiny_checkpoint), "--prompt", "a cat", "--ddim_steps", "2", "--n_iter", "2",
                 "--n_samples", "2", "--outdir", "out", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "watermark" in line]
    assert notes == ["python -m ldm txt2img: warning: 64x64 images are under the 256x256 pixels the invisible "
                     "watermark needs: they carry no ldm-demo mark (their parameters text says so)"]
    for i in range(4):
        parameters = Image.open(tmp_path / "out" / "samples" / f"{i:05d}.png").info["parameters"]
        assert parameters.endswith(", Watermark: none (under 256x256 pixels)")


def test_the_watermark_command_puts_and_reads_marks_and_never_overwrites(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    Image.fromarray(noise[:64, :64]).save(tmp_path / "small.png")
    put = run("watermark", "--encode", "SDV2", "noise.png", "marked.png", cwd=tmp_path)
    assert put.returncode == 0 and put.stdout == "marked.png\n", put.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "marked.png")), W.encode(noise, b"SDV2"))

    read = run("watermark", "marked.png", "noise.png", "small.png", cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == ["marked.png: SDV2", "noise.png: no mark",
                                        "small.png: no mark (64x64 is under the 256x256 pixels a mark needs)"]
    raw = run("watermark", "--length", "4", "marked.png", "noise.png", cwd=tmp_path)
    assert raw.stdout.splitlines() == ["marked.png: SDV2", f"noise.png: 0x{W.decode(noise, 4).hex()}"]

    before = (tmp_path / "marked.png").read_bytes()
    again = run("watermark", "--encode", "StableDiffusionV1", "noise.png", "marked.png", cwd=tmp_path)
    assert again.returncode == 2 and "marked.png: already exists" in again.stderr
    assert (tmp_path / "marked.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marked.png", "noise.png", "small.png"]  # no temporary


def test_the_watermark_command_refuses_bad_requests_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # in this process: the refusals come before anything heavy
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "text.png").write_text("not a PNG")
    cases = {
        ("--encode", "SDV2", "small.png", "out.png"): "small.png: 64x64 is under the 256x256 pixels a mark needs",
        ("--encode", "SDV2", "big.png"): "--encode takes two paths, IN and OUT; got 1",
        ("--encode", "", "big.png", "out.png"): "--encode: the mark is empty",
        ("--encode", "SDV2", "big.png", "out.jpg"): "out.jpg: .jpg is lossy",
        ("--encode", "SDV2", "big.png", "out.xyz"): "out.xyz: unknown image type '.xyz'",
        ("--encode", "SDV2", "missing.png", "out.png"): "missing.png: no such file",
        ("--length", "0", "big.png"): "--length 0: must be >= 1",
        ("text.png",): "text.png: not a readable image",
        (".",): ".: not a regular file",
    }
    for args, message in cases.items():
        assert main(["watermark", *args]) == 2, args
        stderr = capsys.readouterr().err
        assert stderr.startswith("python -m ldm watermark: error: ") and message in stderr, args
        assert len(stderr.splitlines()) == 1, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "small.png", "text.png"]
