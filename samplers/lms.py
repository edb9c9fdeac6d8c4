"""LMS: a linear multistep method (Adams-Bashforth) over the probability-flow ODE in sigma space,
dx/dsigma = d(x, sigma) (Karras et al. 2022, EDM eq. 3); k-diffusion 0.1.1.post1's sample_lms.

The derivatives d_i, d_{i-1}, ..., d_{i-order+1} of the last steps are interpolated by the
Lagrange polynomial through their sigmas, and that polynomial is integrated over the step:

    x_{i+1} = x_i + sum_j c_j d_{i-j},   c_j = integral_{sigma_i}^{sigma_{i+1}} prod_{k != j}
                                                 (s - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k}) ds

The order grows 1, 2, 3, 4 over the first steps (one model call per step). k-diffusion integrates
c_j numerically (scipy's quad); here by Gauss-Legendre quadrature, exact for these polynomials, in
float64 (numpy): the same numbers to within rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from .sigma_space import Denoise, SigmaCallback, steps_of, to_d

ORDER = 4  # k-diffusion's default


def multistep_coefficient(order: int, sigmas: np.ndarray, i: int, j: int) -> float:
    """c_j of the step from sigmas[i] to sigmas[i + 1] (k-diffusion linear_multistep_coeff): the
    Lagrange basis polynomial integrated by Gauss-Legendre quadrature, exact for its degree
    (order - 1 <= 3) and, like scipy's quad there, evaluating the product where it is small (the
    expanded polynomial's antiderivative would cancel badly between two nearby sigmas)."""
    nodes, weights = np.polynomial.legendre.leggauss(ORDER)
    a, b = float(sigmas[i]), float(sigmas[i + 1])
    tau = (b - a) / 2 * nodes + (a + b) / 2  # float64
    basis = np.ones_like(tau)
    for k in range(order):
        if k != j:
            # sigmas is float32, as k-diffusion's: its denominators are float32 differences
            basis *= (tau - float(sigmas[i - k])) / (sigmas[i - j] - sigmas[i - k])
    return float((b - a) / 2 * np.sum(weights * basis))


@torch.no_grad()
def lms(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, callback: SigmaCallback | None = None,
        progress: bool = True) -> torch.Tensor:
    """LMS of order up to 4: x_{i+1} = x_i + sum_j c_j d_{i-j} (see the module doc)."""
    ones = x.new_ones([x.shape[0]])
    sigmas_float32 = sigmas.cpu().numpy()  # float32, as k-diffusion's
    derivatives: list[torch.Tensor] = []  # oldest first
    for i in steps_of(sigmas, "LMS", progress):
        denoised = denoise(x, sigmas[i] * ones)
        derivatives = (derivatives + [to_d(x, sigmas[i], denoised)])[-ORDER:]
        order = min(i + 1, ORDER)
        coefficients = [multistep_coefficient(order, sigmas_float32, i, j) for j in range(order)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(derivatives)))
        if callback is not None:
            callback(i, sigmas[i], x, denoised)
    return x
