"""The reference samplers beyond DDIM and PLMS, for run_original.py's "sampling" job (it runs in
the subprocess whose `ldm` is the ORIGINAL one; it must never import this project's packages):

- the v2 repository's DPMSolverSampler (ldm/models/diffusion/dpm_solver/, in the
  stable-diffusion-sdkit wheel), called as the v2 scripts call it; for img2img, its DPM_Solver's
  own late start (sample(..., t_start=...));
- k-diffusion 0.1.1.post1's samplers (k_diffusion/sampling.py) over its CompVisDenoiser /
  CompVisVDenoiser (k_diffusion/external.py), with classifier-free guidance as one [uncond, cond]
  batch (the CFGDenoiser of k-diffusion's examples and AUTOMATIC1111), on k-diffusion's default
  sigmas or get_sigmas_karras. The package is loaded by file path, without its __init__ (which
  imports training and evaluation code): torchsde, torchdiffeq and torchvision, imported but not
  used on these paths, are stand-ins; scipy (LMS's integrals) is the real one.
"""

import importlib.util
import sys
import types

import torch

K_SAMPLERS = {"euler": "sample_euler", "euler_a": "sample_euler_ancestral", "heun": "sample_heun",
              "dpm2": "sample_dpm_2", "dpm2_a": "sample_dpm_2_ancestral", "lms": "sample_lms",
              "dpmpp_2s_a": "sample_dpmpp_2s_ancestral", "dpmpp_2m": "sample_dpmpp_2m", "dpmpp_sde": "sample_dpmpp_sde",
              "dpmpp_2m_sde": "sample_dpmpp_2m_sde"}
NOISY = {"euler_a", "dpm2_a", "dpmpp_2s_a", "dpmpp_sde", "dpmpp_2m_sde"}


def import_k_diffusion(root: str) -> types.ModuleType:
    """k_diffusion's sampling and external modules, from the unpacked wheel at `root`."""
    stubs = {name: types.ModuleType(name) for name in
             ("torchsde", "torchdiffeq", "torchvision", "torchvision.transforms", "torchvision.transforms.functional")}
    stubs["torchdiffeq"].odeint = None
    stubs["torchsde"].BrownianTree = None
    sys.modules.update(stubs)
    package = types.ModuleType("k_diffusion")
    package.__path__ = [f"{root}/k_diffusion"]
    sys.modules["k_diffusion"] = package
    for name in ("utils", "sampling", "external"):
        spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", f"{root}/k_diffusion/{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)
    return package


class CFGDenoiser(torch.nn.Module):
    """Classifier-free guidance over a k-diffusion denoiser, as one [uncond, cond] batch."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, sigma, uncond, cond, cond_scale):
        if uncond is None:
            return self.inner(x, sigma, cond=cond)
        x_in, sigma_in, cond_in = torch.cat([x] * 2), torch.cat([sigma] * 2), torch.cat([uncond, cond])
        denoised_uncond, denoised_cond = self.inner(x_in, sigma_in, cond=cond_in).chunk(2)
        return denoised_uncond + (denoised_cond - denoised_uncond) * cond_scale


def k_sample(k_diffusion, model, case: dict, inputs: dict) -> torch.Tensor:
    """One k-diffusion sampler run: txt2img from x_T * sigma_0, or (t_enc in the case) img2img
    from x0 + noise * sigma_start, AUTOMATIC1111's start (sigmas[steps - t_enc - 1:])."""
    wrapper = (k_diffusion.external.CompVisVDenoiser if case["parameterization"] == "v"
               else k_diffusion.external.CompVisDenoiser)(model)
    steps = case["steps"]
    if case["karras"]:
        sigmas = k_diffusion.sampling.get_sigmas_karras(steps, wrapper.sigmas[0].item(), wrapper.sigmas[-1].item())
    else:
        sigmas = wrapper.get_sigmas(steps)
    if "t_enc" in case:
        sigmas = sigmas[max(steps - case["t_enc"] - 1, 0):]
        x = inputs["x0"] + inputs["x_T"] * sigmas[0]
    else:
        x = inputs["x_T"] * sigmas[0]
    generator = torch.Generator().manual_seed(case["seed"])
    options = {}
    if case["sampler"] in NOISY:
        options = {"eta": case.get("eta", 1.0), "noise_sampler": lambda sigma, sigma_next: torch.randn(
            x.shape, generator=generator)}
    uncond = inputs["uncond"] if case["scale"] != 1.0 else None
    sample = getattr(k_diffusion.sampling, K_SAMPLERS[case["sampler"]])
    return sample(CFGDenoiser(wrapper), x, sigmas, disable=True, extra_args={
        "cond": inputs["cond"], "uncond": uncond, "cond_scale": case["scale"]}, **options)


def dpm_solver_sample(model, case: dict, inputs: dict) -> torch.Tensor:
    """The v2 DPMSolverSampler (txt2img), or its DPM_Solver from t_start (img2img: t_enc in the case)."""
    from ldm.models.diffusion.dpm_solver.dpm_solver import DPM_Solver, NoiseScheduleVP, model_wrapper
    from ldm.models.diffusion.dpm_solver.sampler import MODEL_TYPES, DPMSolverSampler

    uncond = inputs["uncond"] if case["scale"] != 1.0 else None
    if "t_enc" not in case:
        sample, _ = DPMSolverSampler(model).sample(
            S=case["steps"], batch_size=inputs["x_T"].shape[0], shape=tuple(inputs["x_T"].shape[1:]),
            conditioning=inputs["cond"], x_T=inputs["x_T"], verbose=False, unconditional_guidance_scale=case["scale"],
            unconditional_conditioning=uncond)
        return sample
    # What DPMSolverSampler.sample builds, then DPM_Solver.sample started late on the full run's time grid.
    schedule = NoiseScheduleVP("discrete", alphas_cumprod=model.alphas_cumprod.to(torch.float32))
    model_fn = model_wrapper(lambda x, t, c: model.apply_model(x, t, c), schedule,
                             model_type=MODEL_TYPES[model.parameterization], guidance_type="classifier-free",
                             condition=inputs["cond"], unconditional_condition=uncond,
                             guidance_scale=case["scale"])
    solver = DPM_Solver(model_fn, schedule, predict_x0=True, thresholding=False)
    steps, t_enc = case["steps"], case["t_enc"]
    t_start = solver.get_time_steps("time_uniform", 1.0, 1.0 / schedule.total_N, steps, "cpu")[steps - t_enc].item()
    t = torch.tensor([t_start])
    x = (schedule.marginal_alpha(t) * inputs["x0"] + schedule.marginal_std(t) * inputs["x_T"])
    return solver.sample(x, steps=t_enc, t_start=t_start, skip_type="time_uniform", method="multistep", order=2,
                         lower_order_final=True)


class WithToyModel:
    """The LatentDiffusion `model` (its schedule buffers, its parameterization) with its network
    replaced by toy_model.ToyModel: apply_model(x, t, cond) is the toy's."""

    def __init__(self, model, toy):
        self._model, self._toy = model, toy

    def __getattr__(self, name):
        return getattr(self._model, name)

    def apply_model(self, x, t, cond, *args, **kwargs):
        return self._toy(x, t, cond)


def sample_case(model, case: dict, inputs: dict, k_diffusion_root: str) -> torch.Tensor:
    if case.get("model") == "toy":
        from toy_model import ToyModel

        model = WithToyModel(model, ToyModel(seed=case["toy_seed"]))
    if case["sampler"] == "dpm_solver":
        return dpm_solver_sample(model, case, inputs)
    k_diffusion = sys.modules.get("k_diffusion") or import_k_diffusion(k_diffusion_root)
    return k_sample(k_diffusion, model, case, inputs)
