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
    assert options_of(sample_ddim) == {"eta", "generator", "first_index"}
    assert options_of(sample_plms) == frozenset()


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
    with pytest.raises(ValueError, match=r"eta=0.5: the one_step sampler adds no noise; .*\['ddim'\]"):
        tiny_sd.txt2img("a cat", sampler="one_step", eta=0.5, progress=False)
    with pytest.raises(ValueError, match=r"sampler='one_step': cannot start part-way down the schedule"):
        tiny_sd.img2img(Image.new("RGB", (64, 64)), "a cat", sampler="one_step", progress=False)
    with pytest.raises(ValueError, match=r"sampler='euler': not one of \['ddim', 'one_step', 'plms'\]"):
        tiny_sd.txt2img("a cat", sampler="euler", progress=False)


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
