"""The schedule and the DDIM timestep selection, pinned to the original's values and quirks."""

import pytest
import torch

from samplers import NoiseSchedule, ddim_timesteps


def test_linear_schedule_is_linear_in_sqrt_beta_in_float64():
    schedule = NoiseSchedule.linear(1000, 0.00085, 0.012)
    assert schedule.betas.dtype == torch.float64
    assert schedule.betas[0].item() == pytest.approx(0.00085, rel=1e-12)
    assert schedule.betas[-1].item() == pytest.approx(0.012, rel=1e-12)
    root = schedule.betas.sqrt()
    assert torch.allclose(root[1:] - root[:-1], (root[-1] - root[0]) / 999 * torch.ones(999, dtype=torch.float64))
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(0.0046601, rel=1e-4)  # alpha_bar_999 of SD (diffusers: 0.0046601)


@pytest.mark.parametrize(
    "steps, expected",
    [
        (50, list(range(1, 1000, 20))),  # the +1: 1, 21, ..., 981
        (4, [1, 251, 501, 751]),
        (7, [1, 143, 285, 427, 569, 711, 853, 995]),  # 8 steps for 7, as the original
        (3, [1, 334, 667]),  # the original would index t=1000 here and fail
        (1, [1]),
    ],
)
def test_ddim_timesteps_are_the_originals(steps, expected):
    assert ddim_timesteps(steps).tolist() == expected


@pytest.mark.parametrize("steps", [0, 1001])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(steps)


def test_q_sample_is_the_forward_process():
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4), per batch element."""
    schedule = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    t = torch.tensor([0, 500, 999])
    x_t = schedule.q_sample(x0, t, noise)
    a = schedule.alphas_cumprod[t].view(3, 1, 1, 1)
    expected = a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()
    assert torch.allclose(x_t.double(), expected, atol=1e-6)
    assert x_t[2].std() > 0.9  # at t=999 almost pure noise
