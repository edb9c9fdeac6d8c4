"""Noise schedules and samplers (DDIM, PLMS, classifier-free guidance); they depend on torch only."""

from .schedule import NoiseSchedule, linear_betas

__all__ = ["NoiseSchedule", "linear_betas"]
