"""Noise schedules and samplers (DDIM, PLMS, classifier-free guidance); they depend on torch only."""

from .ddim import sample_ddim
from .guidance import guided
from .plms import sample_plms
from .schedule import DDIMCoefficients, NoiseSchedule, ddim_timesteps, linear_betas

__all__ = ["DDIMCoefficients", "NoiseSchedule", "ddim_timesteps", "guided", "linear_betas", "sample_ddim", "sample_plms"]
