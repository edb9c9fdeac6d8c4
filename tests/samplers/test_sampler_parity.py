"""DDIM, PLMS, classifier-free guidance and img2img's start, against the ORIGINAL samplers.

The reference runs the original DDIMSampler / PLMSSampler on the original LatentDiffusion (its
real schedule buffers, apply_model, v-conversions) with a small random UNet; ours runs our
samplers over our UNet with the same weights. Same x_T, same conditioning, same seeds. The
sampler math is what is compared, so a small UNet is enough (the UNet itself is compared at full
size in tests/ldm/test_unet.py).
"""

from __future__ import annotations

import pytest
import torch

from checkpoints_convert.keymap.unet import original_to_ours
from checkpoints_convert.remap import load_state, rename_keys
from ldm.config import UNetConfig
from ldm.modules.unet import UNet
from samplers import NoiseSchedule, guided, sample_ddim, sample_plms
from tests.reference.original_configs import SMALL_DDCONFIG, SMALL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity

TOLERANCE = 1e-5
SMALL_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_res_blocks=1,
                        num_heads=2, context_dim=32)
CASES = [
    dict(name="ddim-eps-50-cfg7.5", sampler="ddim", parameterization="eps", steps=50, eta=0.0, scale=7.5, seed=0),
    dict(name="ddim-eps-10-eta1-cfg7.5", sampler="ddim", parameterization="eps", steps=10, eta=1.0, scale=7.5, seed=3),
    dict(name="ddim-eps-4-eta0.5-nocfg", sampler="ddim", parameterization="eps", steps=4, eta=0.5, scale=1.0, seed=4),
    dict(name="ddim-v-10-cfg9", sampler="ddim", parameterization="v", steps=10, eta=0.0, scale=9.0, seed=0),
    dict(name="ddim-v-4-eta1-cfg5", sampler="ddim", parameterization="v", steps=4, eta=1.0, scale=5.0, seed=5),
    dict(name="plms-eps-10-cfg7.5", sampler="plms", parameterization="eps", steps=10, eta=0.0, scale=7.5, seed=0),
    dict(name="plms-eps-4-cfg5", sampler="plms", parameterization="eps", steps=4, eta=0.0, scale=5.0, seed=0),
    dict(name="img2img-eps-50-s0.75", sampler="img2img", parameterization="eps", steps=50, eta=0.0, scale=5.0,
         t_enc=37, seed=7),
    dict(name="img2img-eps-10-s0.7-eta1", sampler="img2img", parameterization="eps", steps=10, eta=1.0, scale=5.0,
         t_enc=7, seed=9),
    dict(name="img2img-v-4-s0.5-eta1", sampler="img2img", parameterization="v", steps=4, eta=1.0, scale=5.0,
         t_enc=2, seed=8),
]


@pytest.fixture(scope="module")
def reference():
    g = torch.Generator().manual_seed(0)
    inputs = {"x_T": torch.randn(2, 4, 8, 8, generator=g), "cond": torch.randn(2, 5, 32, generator=g),
              "uncond": torch.randn(2, 5, 32, generator=g), "x0": torch.randn(2, 4, 8, 8, generator=g)}
    params = {"unet": SMALL_UNET_PARAMS, "ddconfig": SMALL_DDCONFIG, "cases": CASES}
    _, outputs = run_original("sampling", params, inputs, seed=2)
    return inputs, outputs, small_unets(outputs)


def small_unets(outputs: dict) -> dict[str, UNet]:
    """Our small UNets ("eps", "v") with the weights the original's sampling job randomised."""
    unets = {}
    for parameterization in ("eps", "v"):
        prefix = f"{parameterization}/unet/"
        state = {k[len(prefix):]: v for k, v in outputs.items() if k.startswith(prefix)}
        unet = UNet(SMALL_UNET).eval()
        load_state(unet, rename_keys(state, original_to_ours(SMALL_UNET), "unet"), "unet")
        unets[parameterization] = unet
    return unets


def run_ours(case: dict, inputs: dict, unet: UNet, callback=None) -> torch.Tensor:
    schedule = NoiseSchedule.linear()
    uncond = inputs["uncond"] if case["scale"] != 1.0 else None
    model = guided(unet, inputs["cond"], uncond, case["scale"])
    generator = torch.Generator().manual_seed(case["seed"])
    if case["sampler"] == "plms":
        return sample_plms(model, inputs["x_T"], schedule, case["steps"], prediction=case["parameterization"],
                           callback=callback, progress=False)
    if case["sampler"] == "img2img":  # the noise to step t_enc first, then the sampler's, from one generator
        noise = torch.randn(inputs["x0"].shape, generator=generator)
        return sample_ddim(model, noise, schedule, case["steps"], prediction=case["parameterization"], eta=case["eta"],
                           x_0=inputs["x0"], t_enc=case["t_enc"], generator=generator, progress=False)
    return sample_ddim(model, inputs["x_T"], schedule, case["steps"], prediction=case["parameterization"],
                       eta=case["eta"], generator=generator, callback=callback, progress=False)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_sampler_matches_the_original(reference, case):
    inputs, outputs, unets = reference
    expected = outputs[f"{case['name']}/sample"]
    assert expected.std() > 0.1 and not torch.allclose(expected, inputs["x_T"])
    seen = []
    ours = run_ours(case, inputs, unets[case["parameterization"]],
                    callback=lambda i, t, x, pred_x0: seen.append((i, t, pred_x0)))
    error = relative_error(ours, expected)
    print(f"{case['name']}: relative error {error:.2e}")
    record_parity("sampler", case["name"], "latent 8x8, batch 2, small UNet", "final latent", "original "
                  + ("PLMSSampler" if case["sampler"] == "plms" else "DDIMSampler"), error, TOLERANCE)
    assert error <= TOLERANCE
    if case["sampler"] != "img2img":  # the callback sees every step, starting at the highest timestep
        assert [s[0] for s in seen] == list(range(case["steps"]))
        assert seen[0][1] == 1000 // case["steps"] * (case["steps"] - 1) + 1
        assert relative_error(seen[0][2], outputs[f"{case['name']}/pred_x0_first"]) <= TOLERANCE


def test_plms_on_a_v_model_equals_plms_on_the_same_model_as_eps(reference):
    """The original PLMS treats a v-model's output as eps (and so breaks); ours converts v to eps.
    Constructed check: wrap an eps-model as a v-model, v = sqrt(a) eps - sqrt(1-a) x0(eps); PLMS
    on the wrapped v-model must give the eps-model's samples."""
    from samplers.prediction import v_from_eps_and_x0

    inputs, _, unets = reference
    schedule = NoiseSchedule.linear()
    eps_model = guided(unets["eps"], inputs["cond"], inputs["uncond"], 7.5)

    def v_model(x, t):
        eps = eps_model(x, t)
        a = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return v_from_eps_and_x0(schedule, x0, t, eps)

    as_eps = sample_plms(eps_model, inputs["x_T"], schedule, 10, prediction="eps", progress=False)
    as_v = sample_plms(v_model, inputs["x_T"], schedule, 10, prediction="v", progress=False)
    assert as_eps.std() > 0.1
    assert relative_error(as_v, as_eps) <= 1e-5
