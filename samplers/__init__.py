"""Noise schedules and samplers: DDIM, PLMS, the v2 repository's DPM-Solver++ and k-diffusion's
family, with classifier-free guidance; they depend on torch, numpy and tqdm only.

SAMPLERS is the one table of samplers: name -> function, all with the signature of
samplers/common.py. The tasks, the command line's --sampler choices and the docs read it; a new
sampler is a file of its own and one line here. The k-diffusion loops (euler.py, dpm2.py, lms.py,
dpmpp.py) walk a list of sigmas; `deterministic` / `stochastic` (sigma_space.py) give them the
table's signature.
"""

from .common import Callback, Model, Sampler, default_of, min_steps_of, options_of
from .ddim import sample_ddim
from .dpm2 import dpm_2, dpm_2_ancestral
from .dpm_solver import sample_dpm_solver
from .dpmpp import dpmpp_2m, dpmpp_2m_sde, dpmpp_2s_ancestral, dpmpp_sde
from .euler import euler, euler_ancestral, heun
from .guidance import guided
from .lms import lms
from .plms import sample_plms
from .schedule import DDIMCoefficients, NoiseSchedule, ddim_timesteps, linear_betas
from .sigma_space import deterministic, stochastic

SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,  # DDIM (Song et al. 2021), the original DDIMSampler
    "plms": sample_plms,  # PLMS / PNDM (Liu et al. 2022), the original PLMSSampler
    "dpm_solver": sample_dpm_solver,  # DPM-Solver++(2M) (Lu et al. 2022), the v2 repository's DPMSolverSampler
    # k-diffusion 0.1.1.post1 (Karras et al. 2022; Lu et al. 2022), in sigma space
    "euler": deterministic(euler),
    "euler_a": stochastic(euler_ancestral),
    "heun": deterministic(heun),
    "dpm2": deterministic(dpm_2),
    "dpm2_a": stochastic(dpm_2_ancestral),
    "lms": deterministic(lms),
    "dpmpp_2s_a": stochastic(dpmpp_2s_ancestral),
    "dpmpp_2m": deterministic(dpmpp_2m),
    "dpmpp_sde": stochastic(dpmpp_sde),
    "dpmpp_2m_sde": stochastic(dpmpp_2m_sde),
}

__all__ = ["SAMPLERS", "Callback", "DDIMCoefficients", "Model", "NoiseSchedule", "Sampler", "ddim_timesteps",
           "default_of", "guided", "linear_betas", "min_steps_of", "options_of", "sample_ddim", "sample_dpm_solver",
           "sample_plms"]
