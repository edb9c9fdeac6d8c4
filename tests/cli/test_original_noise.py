"""`--noise original`: the x_T of each batch as the ORIGINAL scripts/txt2img.py draws it (its loop
over the original DDIMSampler, PLMSSampler and the v2 scripts' DPMSolverSampler, run by
tests/reference/run_original.py "script_noise"), for an --n_iter 2 --n_samples 2 run, with and
without --fixed_code; through the library (OriginalNoise) and through the command line."""

from __future__ import annotations

import pytest
import torch

from ldm.cli import main
from ldm.pipeline import StableDiffusion
from ldm.tasks.original_noise import OriginalNoise
from tests.reference.original_configs import SMALL_DDCONFIG, SMALL_UNET_PARAMS
from tests.reference.original_ldm import run_original

SEED, N_ITER, N_SAMPLES, SHAPE = 31, 2, 2, [4, 16, 16]  # the tiny checkpoint's 64x64 images: 16x16 latents
# 7 steps: the original's DDIM schedule has 8 (range(0, 1000, 142) has 8 entries), so are its draws.
STEPS = 7
CASES = [dict(name=f"{sampler}{'-fixed' if fixed else ''}", sampler=sampler, fixed_code=fixed, seed=SEED,
              n_iter=N_ITER, n_samples=N_SAMPLES, shape=SHAPE, steps=STEPS)
         for sampler in ("ddim", "plms", "dpm_solver") for fixed in (False, True)]
FLAGS = {"ddim": [], "plms": ["--plms"], "dpm_solver": ["--dpm"]}


@pytest.fixture(scope="module")
def original_x_T() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    inputs = {"cond": torch.randn(N_SAMPLES, 5, 32, generator=g), "uncond": torch.randn(N_SAMPLES, 5, 32, generator=g)}
    params = {"unet": SMALL_UNET_PARAMS, "ddconfig": SMALL_DDCONFIG, "cases": CASES}
    _, outputs = run_original("script_noise", params, inputs, seed=2)
    x_T = {case["name"]: outputs[f"{case['name']}/x_T"] for case in CASES}
    for name, batches in x_T.items():  # [n_iter, n_samples, C, h, w], real draws
        assert batches.shape == (N_ITER, N_SAMPLES, *SHAPE) and 0.9 < batches.std() < 1.1, name
        assert torch.equal(batches[0], batches[1]) == name.endswith("-fixed"), name
    return x_T


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_original_noise_is_the_original_scripts_x_T_batch_after_batch(original_x_T, case):
    noise = OriginalNoise(SEED, "cpu", (N_SAMPLES, *SHAPE), sampler=case["sampler"], steps=STEPS,
                          fixed_code=case["fixed_code"])
    ours = torch.stack([noise.next_x_T(N_SAMPLES) for _ in range(N_ITER)])
    assert torch.equal(ours, original_x_T[case["name"]])


def test_the_command_line_feeds_txt2img_the_original_x_T(original_x_T, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen, txt2img = [], StableDiffusion.txt2img

    def recording_txt2img(self, prompt, **kwargs):
        seen.append(kwargs["x_T"].cpu())
        return txt2img(self, prompt, **kwargs)

    monkeypatch.setattr(StableDiffusion, "txt2img", recording_txt2img)
    for case in CASES:
        seen.clear()
        args = ["txt2img", "--ckpt", str(tiny_checkpoint), "--prompt", "Seed: 5 of a tree", "--noise", "original",
                "--seed", str(SEED), "--n_iter",
                str(N_ITER), "--n_samples", str(N_SAMPLES), "--ddim_steps", str(STEPS), "--outdir", case["name"],
                "--skip_grid", "--no-progress", "--device", "cpu", *FLAGS[case["sampler"]]]
        assert main(args + ["--fixed_code"] * case["fixed_code"]) == 0
        assert torch.equal(torch.stack(seen), original_x_T[case["name"]]), case["name"]
    from PIL import Image

    parameters = Image.open(tmp_path / "ddim" / "samples" / "00003.png").info["parameters"]
    assert parameters.startswith("Seed: 5 of a tree\n")  # the prompt's own "Seed:" is left alone
    assert f"Seed: {SEED}, Noise: original batch 2 image 2, " in parameters.split("\n")[-1]


@pytest.mark.parametrize("args, words", [
    (["--sampler", "euler"], "--noise original and --sampler euler: the original scripts run ddim, plms, dpm_solver"),
    (["--ddim_eta", "0.5"], "--noise original and --ddim_eta 0.5: DDIM's noise at eta > 0"),
])
def test_what_the_original_stream_cannot_give_is_refused(args, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["txt2img", "--noise", "original", *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m ldm txt2img: error: {words}"), lines
