"""The training entry point runs (a few steps, not the hour), is reproducible, caps its time, and
writes a file that loads through from_checkpoint like the shipped one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ldm.pipeline import StableDiffusion
from tests.ldm_command import run_ldm

ROOT = Path(__file__).resolve().parents[3]
FEW_STEPS = ["--autoencoder-steps", "3", "--denoiser-steps", "4", "--batch-size", "4", "--no-progress"]

pytestmark = pytest.mark.slow  # training runs


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_ldm("train-demo", *args, cwd=cwd)


def record(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["ldm_demo_training"])


def test_a_few_steps_write_a_loadable_demo_checkpoint_and_the_same_seed_gives_the_same_weights(tmp_path):
    first = train("--out", "a.safetensors", *FEW_STEPS, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 autoencoder + 4 denoiser steps" in first.stdout
    second = train("--out", "b.safetensors", *FEW_STEPS, cwd=tmp_path)
    other_seed = train("--out", "c.safetensors", "--seed", "1", *FEW_STEPS, cwd=tmp_path)
    assert second.returncode == 0 and other_seed.returncode == 0, second.stderr + other_seed.stderr
    a, b, c = (load_file(tmp_path / name) for name in ("a.safetensors", "b.safetensors", "c.safetensors"))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, different weights"
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("model.diffusion_model."))
    steps = record(tmp_path / "a.safetensors")
    assert (steps["autoencoder_steps_done"], steps["denoiser_steps_done"]) == (3, 4)

    sd = StableDiffusion.from_checkpoint(tmp_path / "a.safetensors", device="cpu")  # variant detected
    assert sd.variant == "demo"
    assert abs(sd.config.scale_factor - steps["scale_factor"]) < 1e-6 and steps["scale_factor"] > 0
    images = sd.txt2img("a red circle on a blue background", steps=2, seed=0, output="tensor", progress=False)
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


def test_the_minutes_cap_stops_both_stages_early_and_says_so(tmp_path):
    done = train("--out", "capped.safetensors", "--minutes", "0.1", "--autoencoder-steps", "100000",
                 "--denoiser-steps", "100000", "--batch-size", "4", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = record(tmp_path / "capped.safetensors")
    # each stage stops at its share of the 6 s (one step at least), far from its 100,000 steps
    assert 1 <= steps["autoencoder_steps_done"] < 1000 and 1 <= steps["denoiser_steps_done"] < 1000, steps
    assert steps["wall_seconds"] < 60


def test_bad_flags_and_an_existing_out_file_exit_2_naming_the_flag(tmp_path):
    (tmp_path / "taken.safetensors").write_bytes(b"keep me")
    taken = train("--out", "taken.safetensors", *FEW_STEPS, cwd=tmp_path)
    assert taken.returncode == 2 and "--out" in taken.stderr and "exists" in taken.stderr
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep me"
    for args, flag in ((["--out", "x.ckpt"], "--out"), (["--minutes", "0"], "--minutes"),
                       (["--denoiser-steps", "0"], "--denoiser-steps"), (["--out", "no/such/dir/x.safetensors"], "--out")):
        done = train(*args, cwd=tmp_path)
        assert done.returncode == 2 and flag in done.stderr, (args, done.stderr)
