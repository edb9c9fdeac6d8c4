"""DPM-Solver++ and the k-diffusion samplers, each against the code it reimplements, on two
networks: the small random UNet of the original code, and a toy model (see UNET_TOLERANCE).

The references (tests/reference/original_samplers.py) run on the ORIGINAL LatentDiffusion with a
small random UNet, as tests/samplers/test_sampler_parity.py does for DDIM and PLMS:
- `dpm_solver`: the v2 repository's DPMSolverSampler, as its scripts call it;
- every k-sampler: k-diffusion 0.1.1.post1's function of the same name over CompVisDenoiser /
  CompVisVDenoiser, guidance as one [uncond, cond] batch, default and Karras sigmas;
- img2img: AUTOMATIC1111's late start for the k-samplers, DPM_Solver.sample(t_start=...) for DPM-Solver.
Ours runs the SAMPLERS entry itself (the registry's signature) on our UNet with the same weights.
The ancestral and SDE samplers get the same noise on both sides: one seeded CPU generator, drawn
in the same order (k-diffusion's noise_sampler there, our generator option here).
"""

from __future__ import annotations

import pytest
import torch

from samplers import SAMPLERS, NoiseSchedule, guided, options_of
from samplers.sigma_space import noise_from
from tests.reference.original_configs import SMALL_DDCONFIG, SMALL_UNET_PARAMS
from tests.reference.original_ldm import relative_error, run_original
from tests.reference.parity_record import record_parity
from tests.reference.toy_model import ToyModel
from tests.samplers.test_sampler_parity import small_unets

TOLERANCE = 1e-5
# On the toy model (tests/reference/toy_model.py: the same function, computed the same way, on
# both sides) every sampler is bit-exact but LMS, whose quadrature rounds its coefficients apart
# from scipy's (measured <= 1.5e-6): the samplers' math is the reference's, operation for operation.
# On the random UNet, float32 rounding inside the UNet is amplified by sampling a poor denoiser:
# the same float32 code run in float64 lands up to 2.5e-5 away (ours; the reference: 2.3e-5, both
# measured for dpm2_a-v-karras-10), so two float32 implementations that round differently inside
# the UNet can be twice that apart, whatever their sampler math. Measured worst: 5.1e-5 (that
# case); the median case is 3e-6. Hence 1e-4 on the UNet, 1e-5 on the toy model.
UNET_TOLERANCE = 1e-4
# The toy network's weights for the eps- and the v-model (tests/reference/toy_model.py).
TOY_SEEDS = {"eps": 10, "v": 11}
K_SAMPLERS = ["euler", "euler_a", "heun", "dpm2", "dpm2_a", "lms", "dpmpp_2s_a", "dpmpp_2m", "dpmpp_sde",
              "dpmpp_2m_sde"]


def k_cases(model: str) -> list[dict]:
    cases = []
    for number, sampler in enumerate(K_SAMPLERS):
        for prediction, scale in (("eps", 7.5), ("v", 9.0)):
            for karras in (False, True):
                for steps in (4, 10):
                    name = f"{model}-{sampler}-{prediction}-{'karras' if karras else 'default'}-{steps}"
                    cases.append(dict(name=name, sampler=sampler, parameterization=prediction, steps=steps,
                                      karras=karras, scale=scale, seed=100 + number))
        # img2img, AUTOMATIC1111's start: strength 0.6 of 10 steps (t_enc 6: 7 steps are run)
        cases.append(dict(name=f"{model}-img2img-{sampler}-eps-karras-10-s0.6", sampler=sampler,
                          parameterization="eps", steps=10, karras=True, scale=5.0, seed=200 + number, t_enc=6))
    for sampler in ("euler_a", "dpmpp_2m_sde"):  # an eta of its own
        cases.append(dict(name=f"{model}-{sampler}-eps-default-10-eta0.5", sampler=sampler, parameterization="eps",
                          steps=10, karras=False, scale=7.5, seed=300, eta=0.5))
    dpm_solver = [dict(name=f"{model}-dpm_solver-{prediction}-{steps}", sampler="dpm_solver",
                       parameterization=prediction, steps=steps, scale=scale, seed=0)
                  for prediction, scale in (("eps", 7.5), ("v", 9.0)) for steps in (4, 10)]
    dpm_solver += [dict(name=f"{model}-img2img-dpm_solver-eps-10-s0.6", sampler="dpm_solver", parameterization="eps",
                        steps=10, scale=5.0, seed=0, t_enc=6),
                   dict(name=f"{model}-img2img-dpm_solver-v-4-s0.5", sampler="dpm_solver", parameterization="v",
                        steps=4, scale=5.0, seed=0, t_enc=2)]
    return [{**case, "model": model, "toy_seed": TOY_SEEDS[case["parameterization"]]} for case in dpm_solver + cases]


CASES = k_cases("toy") + k_cases("unet")


@pytest.fixture(scope="module")
def reference():
    g = torch.Generator().manual_seed(1)
    inputs = {"x_T": torch.randn(2, 4, 8, 8, generator=g), "cond": torch.randn(2, 5, 32, generator=g),
              "uncond": torch.randn(2, 5, 32, generator=g), "x0": torch.randn(2, 4, 8, 8, generator=g)}
    params = {"unet": SMALL_UNET_PARAMS, "ddconfig": SMALL_DDCONFIG, "cases": CASES}
    _, outputs = run_original("sampling", params, inputs, seed=3)
    return inputs, outputs, small_unets(outputs)


def run_ours(case: dict, inputs: dict, unet, callback=None) -> torch.Tensor:
    """The SAMPLERS entry on our UNet, or on the toy model for the toy cases."""
    sample = SAMPLERS[case["sampler"]]
    if case["model"] == "toy":
        unet = ToyModel(seed=case["toy_seed"])
    uncond = inputs["uncond"] if case["scale"] != 1.0 else None
    options = {"karras": case["karras"]} if "karras" in options_of(sample) else {}
    if "generator" in options_of(sample):
        options |= {"generator": torch.Generator().manual_seed(case["seed"]), "eta": case.get("eta", 1.0)}
    if "t_enc" in case:
        options |= {"x_0": inputs["x0"], "t_enc": case["t_enc"]}
    return sample(guided(unet, inputs["cond"], uncond, case["scale"]), inputs["x_T"], NoiseSchedule.linear(),
                  case["steps"], prediction=case["parameterization"], callback=callback, progress=False, **options)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_sampler_matches_its_reference(reference, case):
    inputs, outputs, unets = reference
    expected = outputs[f"{case['name']}/sample"]
    assert expected.std() > 0.1 and not torch.allclose(expected, inputs["x_T"], atol=0.1)
    seen = []
    ours = run_ours(case, inputs, unets[case["parameterization"]], lambda i, t, x, x0: seen.append((i, t)))
    error = relative_error(ours, expected)
    print(f"{case['name']}: relative error {error:.2e}")
    source = "v2 DPMSolverSampler" if case["sampler"] == "dpm_solver" else f"k-diffusion {case['sampler']}"
    tolerance = TOLERANCE if case["model"] == "toy" else UNET_TOLERANCE
    network = "toy model" if case["model"] == "toy" else "small UNet"
    record_parity("sampler", case["name"], f"latent 8x8, batch 2, {network}", "final latent", source, error, tolerance)
    assert error <= tolerance
    # The callback sees every step once, in order, at falling timesteps (fractional here).
    if "t_enc" not in case:
        assert [i for i, _ in seen] == list(range(case["steps"]))
        assert all(a > b for (_, a), (_, b) in zip(seen, seen[1:])) and abs(seen[0][1] - 999) < 1e-3


def test_an_image_does_not_depend_on_its_batch(reference):
    """Ancestral noise from each image's own generator: image 1 of a batch of two is image 1 alone."""
    inputs, _, unets = reference
    schedule, seeds = NoiseSchedule.linear(), [11, 12]
    both = SAMPLERS["euler_a"](guided(unets["eps"], inputs["cond"], inputs["uncond"], 7.5), inputs["x_T"], schedule,
                               6, generator=[torch.Generator().manual_seed(s) for s in seeds], progress=False)
    alone = SAMPLERS["euler_a"](guided(unets["eps"], inputs["cond"][1:], inputs["uncond"][1:], 7.5),
                                inputs["x_T"][1:], schedule, 6, generator=[torch.Generator().manual_seed(seeds[1])],
                                progress=False)
    # 1e-5: the UNet rounds a batch of 4 and of 2 differently (measured 2.5e-6 here); the noise
    # itself is the same draw, exactly (test below), and another seed moves the image by > 1e-2.
    assert both.std() > 0.1 and relative_error(both[1:], alone) <= 1e-5
    # ... and the noise matters: another seed, another image.
    other = SAMPLERS["euler_a"](guided(unets["eps"], inputs["cond"][1:], inputs["uncond"][1:], 7.5),
                                inputs["x_T"][1:], schedule, 6, generator=[torch.Generator().manual_seed(99)],
                                progress=False)
    assert relative_error(other, alone) > 1e-2


def test_noise_from_per_image_generators_draws_each_images_own():
    like = torch.zeros(2, 4, 3, 3)
    drawn = noise_from([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], like)(None, None)
    assert torch.equal(drawn[1], torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(2)))
