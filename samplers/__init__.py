"""Noise schedules and samplers (DDIM, PLMS, classifier-free guidance); they depend on torch only.

SAMPLERS is the one table of samplers: name -> function, all with the signature of
samplers/common.py. The tasks, the command line's --sampler choices and the docs read it; a new
sampler is a file of its own and one line here.
"""

from .common import Callback, Model, Sampler, options_of
from .ddim import sample_ddim
from .guidance import guided
from .plms import sample_plms
from .schedule import DDIMCoefficients, NoiseSchedule, ddim_timesteps, linear_betas

SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,  # DDIM (Song et al. 2021), the original DDIMSampler
    "plms": sample_plms,  # PLMS / PNDM (Liu et al. 2022), the original PLMSSampler
}

__all__ = ["SAMPLERS", "Callback", "DDIMCoefficients", "Model", "NoiseSchedule", "Sampler", "ddim_timesteps", "guided",
           "linear_betas", "options_of", "sample_ddim", "sample_plms"]
