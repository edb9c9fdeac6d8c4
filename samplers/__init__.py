"""Noise schedules and samplers (DDIM, PLMS, classifier-free guidance); they depend on torch only."""
