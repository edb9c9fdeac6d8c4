"""Mixed precision (ldm/precision.py): every task and sampler in bfloat16 on the CPU, the sampler's
arithmetic in float32 around a bfloat16 UNet, and the decode that redoes a non-finite result in
float32."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.config import DEMO
from ldm.modules.unet import Float32GroupNorm
from ldm.pipeline import StableDiffusion
from ldm.precision import decode
from samplers import SAMPLERS
from tests.ldm.tiny_models import TINY_DEPTH, TINY_INPAINTING, TINY_UPSCALER
from tests.reference.original_ldm import relative_error

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = {"txt2img": DEMO, "inpaint": TINY_INPAINTING, "depth2img": TINY_DEPTH, "upscale": TINY_UPSCALER}
# The largest relative error (max |bf16 - fp32| / max |fp32|) of the final latent over every task
# and sampler, 3 steps on the tiny random models, measured: 0.049 (depth2img with euler_a). bfloat16
# keeps 8 bits of mantissa (relative rounding 2^-9 = 0.002 per operation), and the UNet is applied 3 to 6 times.
LATENT_TOLERANCE = 0.08


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[StableDiffusion, StableDiffusion]]:
    """Per task: (a tiny random float32 model, the same weights in bfloat16)."""
    pairs = {}
    for task, config in CONFIGS.items():
        torch.manual_seed(0)
        sd = StableDiffusion(config).eval()
        pairs[task] = sd, copy.deepcopy(sd).to(torch.bfloat16)
    return pairs


def run(sd: StableDiffusion, task: str, sampler: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    common = dict(steps=3, seed=3, sampler=sampler, output="latent", progress=False)
    if task == "txt2img":
        return sd.txt2img("a cat", height=32, width=32, **common)
    if task == "img2img":
        return sd.img2img(image, "a cat", strength=0.75, **common)
    if task == "inpaint":
        mask = torch.zeros(1, 1, 32, 32)
        mask[:, :, 8:24, 8:24] = 1
        return sd.inpaint(image, mask, "a cat", **common)
    if task == "depth2img":
        # MiDaS in bfloat16 runs once (with ddim: 19 s on one thread here, torch emulating bfloat16);
        # the other samplers are handed a depth map.
        depth = None if sampler == "ddim" else torch.rand(1, 1, 32, 32, generator=g)
        return sd.depth2img(image, "a cat", strength=0.75, depth=depth, **common)
    return sd.upscale(image[:, :, :8, :8], "a cat", noise_level=20, **common)


# A sampler sees only the model function, the same for every task: every sampler runs txt2img, and
# every other task runs with three (a deterministic one, an ancestral one, a multistep one).
CASES = [("txt2img", sampler) for sampler in sorted(SAMPLERS)] + [
    (task, sampler) for task in ("img2img", "inpaint", "depth2img", "upscale")
    for sampler in ("ddim", "euler_a", "dpmpp_2m")]


@pytest.mark.parametrize("task, sampler", CASES)
def test_every_task_and_sampler_runs_in_bfloat16_near_float32(models, task, sampler):
    fp32, bf16 = models["txt2img" if task == "img2img" else task]
    want, got = run(fp32, task, sampler), run(bf16, task, sampler)
    assert want.abs().max() > 0.1, "trivial reference"
    assert got.dtype == torch.float32, "the final latent is the sampler's, in float32"
    assert torch.isfinite(got).all()
    error = relative_error(got, want)
    print(f"bf16 relative error {task} {sampler}: {error:.4f}")
    assert error < LATENT_TOLERANCE, f"{task} with {sampler}: relative error {error:.4f}"


def test_the_sampler_steps_in_float32_and_the_unet_computes_in_bfloat16(models, monkeypatch):
    _, bf16 = models["txt2img"]
    seen = []
    forward = type(bf16.unet).forward
    monkeypatch.setattr(type(bf16.unet), "forward",
                        lambda self, x, *rest: seen.append(x.dtype) or forward(self, x, *rest))
    states = []
    bf16.txt2img("a cat", height=32, width=32, steps=3, seed=3, output="latent", progress=False,
                 callback=lambda i, t, x, pred_x0: states.append((x.dtype, pred_x0.dtype)))
    assert seen == [torch.bfloat16] * 3
    assert states == [(torch.float32, torch.float32)] * 3


def test_the_unets_group_norm_computes_in_float32_for_a_bfloat16_model():
    torch.manual_seed(0)
    norm = Float32GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = (torch.randn(2, 8, 5, 5) * 3 + 1).to(torch.bfloat16)
    want = torch.nn.functional.group_norm(x.float(), 4, norm.weight.bfloat16().float(),
                                          norm.bias.bfloat16().float(), norm.eps).bfloat16()
    got = norm.to(torch.bfloat16)(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def overflowing_decoder(sd: StableDiffusion) -> None:
    """Make the bfloat16 decoder's output overflow where float32's does not. norm_out hands conv_out
    2^126 everywhere (weight 0, bias 2^126; SiLU(2^126) = 2^126); conv_out's first channel sums two
    taps of 1.9921875 and a bias of 2^126 * 0.01171875: 2^126 * 3.99609375 = 3.3995e38, finite in
    float32 (largest 3.4028e38), past bfloat16's largest (3.3895e38) by more than half a step, so it
    rounds to inf. Every value is exact in bfloat16, so both runs hold the same weights."""
    decoder = sd.vae.decoder
    with torch.no_grad():
        decoder.norm_out.weight.zero_()
        decoder.norm_out.bias.fill_(2.0**126)
        decoder.conv_out.weight.zero_()
        decoder.conv_out.bias.zero_()
        decoder.conv_out.weight[0, 0, 1, 1] = decoder.conv_out.weight[0, 1, 1, 1] = 1.9921875
        decoder.conv_out.bias[0] = 2.0**126 * 0.01171875


def test_a_non_finite_bfloat16_decode_is_redone_in_float32_with_a_warning():
    torch.manual_seed(0)
    sd = StableDiffusion(DEMO).eval()
    overflowing_decoder(sd)
    bf16 = copy.deepcopy(sd).to(torch.bfloat16)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.isfinite(bf16.vae.decode(z.bfloat16())).all(), "the constructed case overflows in bf16"
        want = sd.vae.decode(z.bfloat16().float())
        before = {k: v.clone() for k, v in bf16.vae.state_dict().items()}
        with pytest.warns(RuntimeWarning, match=r"bfloat16 result was not finite .* redone in float32"):
            got = decode(bf16.vae, z)
    assert torch.isfinite(got).all() and got[:, 0].min() > 3.39e38
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    after = bf16.vae.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in before.items())
    # Through a task: the image comes out (channel 0 clamped to 1), with the warning.
    with pytest.warns(RuntimeWarning, match="redone in float32"):
        image = bf16.txt2img("a cat", height=32, width=32, steps=2, seed=3, output="tensor", progress=False)
    assert torch.isfinite(image).all() and (image[:, 0] == 1).all()


def test_a_finite_decode_is_not_redone(models, recwarn):
    _, bf16 = models["txt2img"]
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = decode(bf16.vae, z)
        want = bf16.vae.decode(z.bfloat16()).float()
    assert torch.equal(image, want) and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bfloat16_on_a_cpu_that_emulates_it_is_said_at_load(tiny_checkpoint, monkeypatch, recwarn, has_bf16):
    monkeypatch.setattr("ldm.precision.cpu_has_bfloat16", lambda: has_bf16)
    sd = StableDiffusion.from_checkpoint(tiny_checkpoint, device="cpu", dtype="bfloat16")
    said = [str(w.message) for w in recwarn if "no bfloat16 instructions" in str(w.message)]
    assert sd.dtype == torch.bfloat16 and len(said) == (0 if has_bf16 else 1)
    StableDiffusion.from_checkpoint(tiny_checkpoint, device="cpu", dtype="float32")
    assert len([w for w in recwarn if "no bfloat16 instructions" in str(w.message)]) == len(said)


@pytest.mark.filterwarnings("ignore:this CPU has no bfloat16 instructions")
def test_the_command_lines_bf16_flag_runs_the_model_in_bfloat16(tmp_path):
    """--bf16 (the v2 scripts' flag) through txt2img on the demo model: the PNG is written, and its
    parameters match a library run in bfloat16 with the same seed."""
    done = subprocess.run([sys.executable, "-m", "ldm", "txt2img", "--prompt", "a red circle", "--bf16", "--seed", "5",
                           "--ddim_steps", "3", "--n_samples", "1", "--n_iter", "1", "--skip_grid", "--no-progress",
                           "--outdir", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    written = np.asarray(Image.open(tmp_path / "out" / "samples" / "00000.png"))
    sd = StableDiffusion.demo(device="cpu", dtype="bfloat16")
    image = sd.txt2img("a red circle", steps=3, seed=5, progress=False)[0]
    assert np.array_equal(written, np.asarray(image))
