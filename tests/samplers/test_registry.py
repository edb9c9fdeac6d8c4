"""One sampler table: a function with the common signature plus one SAMPLERS entry is reachable
from the library (`sd.txt2img(sampler=...)`) and from the command line (`--sampler`), and the
options a sampler does not take are refused by name before any work."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import samplers
from samplers import SAMPLERS, guided, options_of, sample_ddim, sample_plms
from tests.samplers.toy_sampler import sample_one_step

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def one_step(monkeypatch):
    monkeypatch.setitem(SAMPLERS, "one_step", sample_one_step)
    return sample_one_step


def test_every_sampler_has_the_common_signature():
    common = ["model", "x_T", "schedule", "steps", "prediction", "callback", "progress"]
    for name, sample in SAMPLERS.items():
        parameters = inspect.signature(sample).parameters
        assert list(parameters)[:4] == common[:4], name
        assert all(parameters[p].kind is inspect.Parameter.KEYWORD_ONLY for p in list(parameters)[4:]), name
        assert set(common) <= set(parameters), name
    assert options_of(sample_ddim) == {"eta", "generator", "x_0", "t_enc"}
    assert options_of(sample_plms) == {"x_0", "t_enc"}
    # the k-diffusion family: karras for all, eta and the generator for those that add noise
    noisy = {name for name, sample in SAMPLERS.items() if "eta" in options_of(sample)}
    assert noisy == {"ddim", "euler_a", "dpm2_a", "dpmpp_2s_a", "dpmpp_sde", "dpmpp_2m_sde"}
    assert {name for name, sample in SAMPLERS.items() if "karras" in options_of(sample)} == (
        set(SAMPLERS) - {"ddim", "plms", "dpm_solver"})


def test_a_registered_sampler_runs_in_txt2img(tiny_sd, one_step):
    seen = []
    latent = tiny_sd.txt2img("a red circle", sampler="one_step", steps=1, seed=3, output="latent", progress=False,
                             callback=lambda i, t, x, p: seen.append(t))
    # The same sampler by hand, on the guided UNet and the seeded x_T (the task's own wiring).
    x_T = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(3))[None]
    cond = tiny_sd.text_encoder(tiny_sd.tokenizer(["a red circle"]))
    uncond = tiny_sd.text_encoder(tiny_sd.tokenizer([""]))
    expected = sample_one_step(guided(tiny_sd.unet, cond, uncond, 7.5), x_T, tiny_sd.schedule, 1)
    assert seen == [999]
    assert expected.abs().max() > 0.1 and torch.equal(latent, expected)


def test_options_a_sampler_does_not_take_are_refused(tiny_sd, one_step):
    with pytest.raises(ValueError, match=r"eta=0.5: the one_step sampler adds no noise, so it has no eta; .*"
                                         r"\['ddim', 'dpm2_a', 'dpmpp_2m_sde', 'dpmpp_2s_a', 'dpmpp_sde', 'euler_a'\]"):
        tiny_sd.txt2img("a cat", sampler="one_step", eta=0.5, progress=False)
    with pytest.raises(ValueError, match=r"sampler='one_step': cannot start part-way down the schedule"):
        tiny_sd.img2img(Image.new("RGB", (64, 64)), "a cat", sampler="one_step", progress=False)
    with pytest.raises(ValueError, match=r"sampler='eulerr': not one of \['ddim', 'dpm2', .*'one_step', 'plms'\]"):
        tiny_sd.txt2img("a cat", sampler="eulerr", progress=False)


def test_a_registered_sampler_runs_from_the_command_line(tiny_checkpoint, tmp_path):
    """The registry line run before `python -m ldm`'s main: --sampler offers it and the PNG names it."""
    script = ("import sys; from tests.samplers.toy_sampler import register; register(); "
              "from ldm.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["txt2img", "--ckpt", str(tiny_checkpoint), "--prompt", "a cat", "--sampler", "one_step", "--ddim_steps", "1",
            "--n_iter", "1", "--n_samples", "1", "--skip_grid", "--outdir", str(tmp_path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Sampler: ONE_STEP" in Image.open(tmp_path / "samples" / "00000.png").info["parameters"]
    # Without the registry line the flag does not know the name.
    plain = subprocess.run([sys.executable, "-m", "ldm", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 2 and "--sampler: invalid choice: 'one_step'" in plain.stderr
    assert "one_step" not in samplers.SAMPLERS  # nothing leaked into this process


def test_the_docs_list_the_registry():
    """docs/cli.md's --sampler row names exactly the samplers of the table (a new sampler's one
    registry line makes this fail until the page says so)."""
    import re

    row = re.search(r"^\| `--sampler \{([a-z0-9_,]+)\}`", (ROOT / "docs" / "cli.md").read_text(), re.MULTILINE)
    assert row is not None and row.group(1).split(",") == sorted(SAMPLERS)


@pytest.mark.parametrize("kwargs, words", [
    (dict(sampler="ddim", karras=True), r"karras=True: the ddim sampler does not walk a list of noise levels"),
    (dict(sampler="plms", karras=True), r"karras=True: the plms sampler"),
    (dict(sampler="dpm_solver", karras=True), r"karras=True: the dpm_solver sampler"),
    (dict(sampler="euler", eta=0.5), r"eta=0.5: the euler sampler adds no noise, so it has no eta"),
    (dict(sampler="dpmpp_2m", eta=1.0), r"eta=1.0: the dpmpp_2m sampler adds no noise"),
    (dict(sampler="euler_a", eta=-1.0), r"eta=-1.0: must be a finite number >= 0"),
    (dict(sampler="dpm_solver", steps=1), r"steps=1: dpm_solver needs at least 2 steps"),
    (dict(sampler="DPM++ 2M"), r"sampler='DPM\+\+ 2M': not one of \['ddim', 'dpm2', 'dpm2_a', 'dpm_solver', .*'plms'\]"),
])
def test_what_a_sampler_cannot_do_is_refused_with_the_reason(tiny_sd, kwargs, words):
    with pytest.raises(ValueError, match=words):
        tiny_sd.txt2img("a cat", progress=False, **{"steps": 4, **kwargs})


def test_eta_zero_and_an_unset_eta_are_taken_by_every_sampler(tiny_sd):
    """eta 0 is what a sampler without noise does, so it is not refused; unset, each its own default."""
    for name in SAMPLERS:
        options = options_of(SAMPLERS[name])
        default = samplers.default_of(SAMPLERS[name], "eta") if "eta" in options else None
        assert default == {"ddim": 0.0}.get(name, 1.0 if "eta" in options else None)
    latent = tiny_sd.txt2img("a cat", sampler="euler", eta=0.0, steps=2, seed=1, output="latent", progress=False)
    assert torch.equal(latent, tiny_sd.txt2img("a cat", sampler="euler", steps=2, seed=1, output="latent",
                                               progress=False))


def test_img2img_runs_every_sampler_from_its_image(tiny_sd):
    """Each sampler starts part-way down, from the image's latent (x_0, t_enc): another image,
    another result."""
    red, blue = Image.new("RGB", (64, 64), (220, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 220))
    for name in SAMPLERS:
        karras = "karras" in options_of(SAMPLERS[name])
        runs = [tiny_sd.img2img(image, "a cat", sampler=name, karras=karras, strength=0.5, steps=4, seed=3,
                                output="latent", progress=False) for image in (red, blue)]
        assert torch.isfinite(runs[0]).all() and relative_change(runs[0], runs[1]) > 1e-3, name


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()
