"""The command line, run for real in a subprocess: files, names, metadata, no overwrite, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.ldm_command import run_ldm

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """A random-weight checkpoint of the demo size, in the original layout."""
    return tiny_checkpoint


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_ldm(*args, cwd=cwd)


@pytest.mark.slow  # seven samples through the command line
def test_txt2img_writes_numbered_samples_and_a_grid_with_parameters_and_never_overwrites(checkpoint, tmp_path):
    args = ["txt2img", "--ckpt", str(checkpoint), "--prompt", "a red circle on a blue background",
            "--negative-prompt", "green", "--outdir", "out", "--ddim_steps", "3", "--seed", "7", "--no-progress"]
    first = run(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    samples = sorted(p.name for p in (tmp_path / "out" / "samples").iterdir())
    assert samples == [f"{i:05d}.png" for i in range(6)]  # 3 samples x 2 iterations, the original's defaults
    assert (tmp_path / "out" / "grid-0000.png").exists()
    image = Image.open(tmp_path / "out" / "samples" / "00004.png")
    assert image.size == (64, 64)
    parameters = image.info["parameters"]
    assert parameters.startswith("a red circle on a blue background\nNegative prompt: green\n")
    for field in ("Steps: 3", "Sampler: DDIM", "CFG scale: 7.5", "Seed: 11", "Size: 64x64", "Model hash: "):
        assert field in parameters
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "samples").iterdir()}

    second = run(*args[:-1], "--n_iter", "1", "--n_samples", "1", "--skip_grid", "--no-progress", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "out" / "samples").iterdir()}
    assert set(after) == set(before) | {"00006.png"}
    assert all(after[name] == data for name, data in before.items())
    assert not list((tmp_path / "out").glob("grid-0001.png"))
    assert not list((tmp_path / "out" / "samples").glob(".*"))  # no temporary file left


def test_same_seed_same_image_and_plms_and_img2img(checkpoint, tmp_path):
    common = ["--ckpt", str(checkpoint), "--prompt", "a cat", "--ddim_steps", "2", "--n_iter", "1",
              "--n_samples", "1", "--skip_grid", "--no-progress"]
    for outdir in ("a", "b"):
        assert run("txt2img", *common, "--outdir", outdir, "--seed", "5", cwd=tmp_path).returncode == 0
    first = Image.open(tmp_path / "a" / "samples" / "00000.png").tobytes()
    assert first == Image.open(tmp_path / "b" / "samples" / "00000.png").tobytes()
    plms = run("txt2img", *common, "--outdir", "c", "--plms", cwd=tmp_path)
    assert plms.returncode == 0, plms.stderr
    assert "Sampler: PLMS" in Image.open(tmp_path / "c" / "samples" / "00000.png").info["parameters"]
    img2img = run("img2img", *common, "--outdir", "d", "--init-img", str(tmp_path / "a" / "samples" / "00000.png"),
                  "--strength", "0.5", cwd=tmp_path)
    assert img2img.returncode == 0, img2img.stderr
    assert "Denoising strength: 0.5" in Image.open(tmp_path / "d" / "samples" / "00000.png").info["parameters"]


def test_every_sampler_by_name_and_the_original_flags(checkpoint, tmp_path):
    """--sampler NAME [--karras], --dpm, img2img with a k-sampler: the PNG names the sampler as
    AUTOMATIC1111 does, with Eta only for a sampler that adds noise."""
    common = ["--ckpt", str(checkpoint), "--prompt", "a cat", "--ddim_steps", "3", "--n_iter", "1", "--n_samples", "1",
              "--skip_grid", "--no-progress"]
    runs = {"a": ["txt2img", "--sampler", "dpmpp_2m", "--karras"], "b": ["txt2img", "--dpm"],
            "c": ["txt2img", "--sampler", "euler_a", "--ddim_eta", "0.5"],
            "d": ["img2img", "--sampler", "dpmpp_sde", "--karras", "--init-img", "picture.png", "--strength", "0.5"]}
    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "picture.png")
    expected = {"a": ("Sampler: DPM++ 2M Karras,", None), "b": ("Sampler: DPM-Solver++ 2M (v2),", None),
                "c": ("Sampler: Euler a,", "Eta: 0.5"), "d": ("Sampler: DPM++ SDE Karras,", "Eta: 1.0")}
    for outdir, args in runs.items():
        result = run(*args, *common, "--outdir", outdir, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        parameters = Image.open(tmp_path / outdir / "samples" / "00000.png").info["parameters"]
        sampler, eta = expected[outdir]
        assert sampler in parameters and (eta in parameters if eta else "Eta:" not in parameters), parameters


@pytest.mark.parametrize(
    "args, flag",
    [
        (["txt2img", "--ckpt", "missing.ckpt"], "--ckpt missing.ckpt"),
        (["txt2img", "--H", "60"], "--H 60"),
        (["txt2img", "--W", "72"], "--W 72"),  # a multiple of 8, but not of this model's 16
        (["txt2img", "--ddim_steps", "0"], "--ddim_steps 0"),
        (["txt2img", "--ddim_steps", "1001"], "--ddim_steps 1001"),
        (["txt2img", "--scale", "-1"], "--scale -1"),
        (["txt2img", "--sampler", "eulerr"], "--sampler"),
        (["txt2img", "--dtype", "float16", "--device", "cpu"], "--dtype float16"),
        (["txt2img", "--C", "8"], "--C 8"),
        (["img2img", "--init-img", "notes.txt"], "--init-img notes.txt"),
        (["img2img", "--init-img", "picture.png", "--strength", "1.5"], "--strength 1.5"),
        (["convert", "nothing-here.ckpt", "out"], "input nothing-here.ckpt"),
        # Issue 15: refused before any work, one line naming the flag.
        (["txt2img", "--scale", "nan"], "--scale nan"),
        (["txt2img", "--ddim_eta", "inf"], "--ddim_eta inf"),
        (["txt2img", "--seed", "4294967296"], "--seed 4294967296"),  # seeds are 32-bit
        (["txt2img", "--seed", "4294967291"], "--seed 4294967291"),  # 6 images: the last would be 2**32
        (["txt2img", "--n_rows", "-1"], "--n_rows -1"),  # used to crash after all sampling, losing the grid
        # Issue 16: options a sampler does not have, and one sampler asked for twice.
        (["txt2img", "--karras"], "--karras True"),  # DDIM walks no sigmas
        (["txt2img", "--sampler", "euler", "--ddim_eta", "0.5"], "--ddim_eta 0.5"),  # Euler adds no noise
        (["txt2img", "--plms", "--dpm"], "--plms and --dpm"),
        (["txt2img", "--dpm", "--sampler", "euler"], "--dpm and --sampler euler"),
        (["txt2img", "--dpm", "--ddim_steps", "1"], "--ddim_steps 1"),  # the original runs another solver there
        # Issue 17: the inputs of inpaint and upscale, before the model loads.
        (["inpaint", "--init-img", "picture.png", "--mask", "notes.txt"], "--mask notes.txt"),
        (["upscale", "--init-img", "picture.png", "--noise_level", "400"], "--noise_level 400"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_flag(checkpoint, tmp_path, args, flag):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "picture.png")
    if args[0] != "convert" and "--ckpt" not in args:
        args = args + ["--ckpt", str(checkpoint)]
    result = run(*args, "--no-progress" if args[0] != "convert" else "--half", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert flag in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "samples").exists() or not any((tmp_path / "outputs" / "samples").iterdir())


def test_images_get_the_permissions_of_the_umask_and_the_flags_read_both_ways(checkpoint, tmp_path):
    """Issue 15: PNGs were 0600 whatever the umask (the private temporary file's mode); and
    --negative_prompt (the underscore spelling of the scripts' other flags) is accepted."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "ldm", "txt2img", "--ckpt", str(checkpoint), "--ddim_steps", "1", "--n_iter", "1",
            "--n_samples", "1", "--outdir", "out", "--negative_prompt", "green", "--no-progress"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    for png in (tmp_path / "out" / "samples" / "00000.png", tmp_path / "out" / "grid-0000.png"):
        assert png.stat().st_mode & 0o777 == 0o640, (png, oct(png.stat().st_mode))
    assert "Negative prompt: green\n" in Image.open(tmp_path / "out" / "samples" / "00000.png").info["parameters"]


def test_help_shows_the_defaults(tmp_path):
    help_text = run("txt2img", "--help", cwd=tmp_path).stdout
    assert "(default: 50)" in help_text and "(default: 7.5)" in help_text and "(default: outputs)" in help_text
