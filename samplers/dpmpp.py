"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models") in sigma space, as k-diffusion 0.1.1.post1 writes it: 2S ancestral, 2M, SDE
and 2M SDE.

DPM-Solver++ integrates the ODE in lambda = -log sigma (the half log-SNR, up to the VP scaling that
sigma space has divided out), where the data prediction D enters linearly. One step from
lambda_i to lambda_{i+1} = lambda_i + h with D held constant (DPM-Solver++ eq. 9, first order):

    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h} - 1) D(x_i, sigma_i)

The second-order methods replace D with a better estimate of it over the step:
- 2S (single step, DPM-Solver++ algorithm 1): D at the midpoint s = lambda_i + h / 2, from a
  first-order step there (2 model calls per step);
- 2M (multistep, DPM-Solver++ algorithm 2): D extrapolated from this step's and the last step's
  D, D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h (1 model call per step);
- the SDE variants (DPM-Solver++ sec. 5 / k-diffusion's SDE solvers) shrink the deterministic part
  by e^{-eta h} and add fresh noise so that the marginals stay right; eta = 0 gives the ODE back.
"""

from __future__ import annotations

import torch

from .sigma_space import Denoise, Noise, SigmaCallback, ancestral_step, steps_of, to_d


def lambda_of(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = -log sigma (k-diffusion's t_fn)."""
    return sigma.log().neg()


def sigma_of(lam: torch.Tensor) -> torch.Tensor:
    """sigma = exp(-lambda) (k-diffusion's sigma_fn)."""
    return lam.neg().exp()


def first_order(x: torch.Tensor, lam: torch.Tensor, lam_next: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++ eq. 9 from lambda to lambda_next with D = denoised held constant."""
    return (sigma_of(lam_next) / sigma_of(lam)) * x - (lam - lam_next).expm1() * denoised


@torch.no_grad()
def dpmpp_2s_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, noise: Noise,
                       callback: SigmaCallback | None = None, progress: bool = True) -> torch.Tensor:
    """DPM-Solver++(2S) down to sigma_down, then fresh noise of std sigma_up (sigma_space.ancestral_step)."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "DPM++ 2S a", progress):
        denoised = denoise(x, sigmas[i] * ones)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])  # Euler, to sigma = 0
        else:
            lam, lam_next = lambda_of(sigmas[i]), lambda_of(sigma_down)
            h = lam_next - lam
            lam_mid = lam + h / 2
            # First order to the midpoint, written as k-diffusion does (-h/2, not lam - lam_mid: they round apart)
            x_mid = (sigma_of(lam_mid) / sigma_of(lam)) * x - (-h / 2).expm1() * denoised
            denoised_mid = denoise(x_mid, sigma_of(lam_mid) * ones)
            x = first_order(x, lam, lam_next, denoised_mid)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def dpmpp_2m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, callback: SigmaCallback | None = None,
             progress: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M): first order on the first and the last step, D extrapolated in between."""
    ones = x.new_ones([x.shape[0]])
    previous = None
    for i in steps_of(sigmas, "DPM++ 2M", progress):
        denoised = denoise(x, sigmas[i] * ones)
        lam, lam_next = lambda_of(sigmas[i]), lambda_of(sigmas[i + 1])
        h = lam_next - lam
        if previous is None or sigmas[i + 1] == 0:
            x = first_order(x, lam, lam_next, denoised)
        else:
            r = (lam - lambda_of(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = first_order(x, lam, lam_next, denoised_d)
        previous = denoised
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def dpmpp_sde(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, noise: Noise,
              callback: SigmaCallback | None = None, progress: bool = True) -> torch.Tensor:
    """DPM-Solver++ SDE (k-diffusion sample_dpmpp_sde, r = 1/2): an ancestral first-order step to the
    midpoint in lambda gives D there; the whole step is then an ancestral first-order step from x
    with that D (2 model calls per step, fresh noise in each part)."""
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "DPM++ SDE", progress):
        denoised = denoise(x, sigmas[i] * ones)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])  # Euler, to sigma = 0
        else:
            lam, lam_next = lambda_of(sigmas[i]), lambda_of(sigmas[i + 1])
            h = lam_next - lam
            lam_mid = lam + h * 0.5
            # To the midpoint: an ancestral first-order step.
            sigma_down, sigma_up = ancestral_step(sigma_of(lam), sigma_of(lam_mid), eta)
            lam_down = lambda_of(sigma_down)
            x_mid = first_order(x, lam, lam_down, denoised)
            x_mid = x_mid + noise(sigma_of(lam), sigma_of(lam_mid)) * sigma_up
            denoised_mid = denoise(x_mid, sigma_of(lam_mid) * ones)
            # The whole step, from x, with the midpoint's D (k-diffusion's (1 - fac) D + fac D_mid,
            # fac = 1 / (2 r) = 1 at r = 1/2).
            sigma_down, sigma_up = ancestral_step(sigma_of(lam), sigma_of(lam_next), eta)
            lam_down = lambda_of(sigma_down)
            x = first_order(x, lam, lam_down, denoised_mid)
            x = x + noise(sigma_of(lam), sigma_of(lam_next)) * sigma_up
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def dpmpp_2m_sde(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, noise: Noise,
                 callback: SigmaCallback | None = None, progress: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint correction (k-diffusion sample_dpmpp_2m_sde, solver_type='midpoint'):

        x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + (1 - e^{-(1+eta) h}) D_i
                  + (1/2) (1 - e^{-(1+eta) h}) (D_i - D_{i-1}) / r      (from the second step on)
                  + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z

    and on the last step, to sigma = 0, x = D."""
    previous, h_last = None, None
    ones = x.new_ones([x.shape[0]])
    for i in steps_of(sigmas, "DPM++ 2M SDE", progress):
        denoised = denoise(x, sigmas[i] * ones)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = lambda_of(sigmas[i + 1]) - lambda_of(sigmas[i])
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if previous is not None:
                r = h_last / h
                x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - previous)
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
            h_last = h
        previous = denoised
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x
