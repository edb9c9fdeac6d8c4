"""DPM-Solver++(2M) as the Stability v2 repository runs it: its DPMSolverSampler
(ldm/models/diffusion/dpm_solver/sampler.py) calls DPM_Solver(predict_x0=True).sample(x_T, steps=S,
skip_type="time_uniform", method="multistep", order=2, lower_order_final=True). Lu et al. 2022,
"DPM-Solver++", algorithm 2; the code is the authors' dpm_solver.py, vendored in that repository.

Unlike the k-diffusion samplers, it sees the discrete model in continuous VP time t in [1/N, 1]
(N = 1000 training timesteps): x_t = alpha_t x_0 + sigma_t eps, with log alpha_t interpolated
piecewise-linearly between the training timesteps (t_n = (n + 1) / N, log alpha = log(alpha_bar_n) / 2),
sigma_t = sqrt(1 - alpha_t^2) and lambda_t = log alpha_t - log sigma_t (the half log-SNR). The network
is asked at timestep (t - 1/N) * 1000 (fractional). The steps are uniform in t from 1 to 1/N.

With x0_i the data prediction at t_i and h = lambda_{i+1} - lambda_i (DPM-Solver++ eq. 9 and algorithm 2):

    first order:  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) x0_i
    second order: the same with x0_i + (x0_i - x0_{i-1}) / (2 r),   r = h_{i-1} / h

The first step is first order (no previous x0 yet) and, below 15 steps, so is the last
("lower_order_final"). One model call per step.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .common import Callback, Model
from .guidance import Guided
from .schedule import NoiseSchedule

ORDER = 2
# The original DPMSolverSampler switches to its adaptive solver (another algorithm, of as many model
# calls as it likes) at S = 1; that is not reproduced.
MIN_STEPS_WHY = "dpm_solver needs at least 2 steps (the original DPMSolverSampler runs another, adaptive solver at 1)"
LOWER_ORDER_FINAL_BELOW = 15  # the original's `lower_order_final and steps < 15`


def interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear f(x) through the points (xp, yp), xp ascending, extended linearly past
    both ends by the outermost segments (the original's interpolate_fn). x: [B] -> [B]."""
    right = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    left = right - 1
    return yp[left] + (x - xp[left]) * (yp[right] - yp[left]) / (xp[right] - xp[left])


class ContinuousVP:
    """alpha_t, sigma_t, lambda_t of the discrete schedule at continuous t (NoiseScheduleVP('discrete'))."""

    def __init__(self, schedule: NoiseSchedule, device: torch.device):
        n = schedule.num_timesteps
        self.total_n = n
        # The original's float32 alphas_cumprod buffer; t_n = (n + 1) / N, n = 0..N-1.
        self.log_alphas = (0.5 * torch.log(schedule.alphas_cumprod_f32)).to(device)
        self.t_array = torch.linspace(0.0, 1.0, n + 1)[1:].to(device)

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return interpolate(t, self.t_array, self.log_alphas)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - (2.0 * log_alpha).exp())

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The network's timestep of continuous t: (t - 1/N) * 1000, so t = 1 is 999 and t = 1/N is 0."""
        return (t - 1.0 / self.total_n) * 1000.0


def time_steps(vp: ContinuousVP, steps: int, t_start: float = 1.0) -> torch.Tensor:
    """skip_type="time_uniform": steps + 1 times uniform from t_start down to 1/N. -> [steps + 1]"""
    return torch.linspace(t_start, 1.0 / vp.total_n, steps + 1).to(vp.t_array.device)


def first_order_update(vp: ContinuousVP, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, x0_s: torch.Tensor
                       ) -> torch.Tensor:
    """DPM-Solver++(1) from time s to t, x0 held at x0_s (the original's dpm_solver_first_update)."""
    h = vp.lambda_(t) - vp.lambda_(s)
    return (vp.sigma(t) / vp.sigma(s)).view(-1, 1, 1, 1) * x - (vp.alpha(t) * torch.expm1(-h)).view(-1, 1, 1, 1) * x0_s


def second_order_update(vp: ContinuousVP, x: torch.Tensor, x0_list: list[torch.Tensor], t_list: list[torch.Tensor],
                        t: torch.Tensor) -> torch.Tensor:
    """Multistep DPM-Solver++(2) from t_list[-1] to t with the last two x0 (the original's
    multistep_dpm_solver_second_update, solver_type 'dpm_solver')."""
    (x0_prev_1, x0_prev_0), (t_prev_1, t_prev_0) = x0_list, t_list
    lambda_prev_1, lambda_prev_0, lambda_t = vp.lambda_(t_prev_1), vp.lambda_(t_prev_0), vp.lambda_(t)
    alpha_t = vp.alpha(t)
    h_0, h = lambda_prev_0 - lambda_prev_1, lambda_t - lambda_prev_0
    d1 = (1.0 / (h_0 / h)).view(-1, 1, 1, 1) * (x0_prev_0 - x0_prev_1)
    phi = (alpha_t * (torch.exp(-h) - 1.0)).view(-1, 1, 1, 1)
    return (vp.sigma(t) / vp.sigma(t_prev_0)).view(-1, 1, 1, 1) * x - phi * x0_prev_0 - 0.5 * phi * d1


@torch.no_grad()
def sample_dpm_solver(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, prediction: str = "eps",
                      x_0: torch.Tensor | None = None, t_enc: int | None = None, callback: Callback | None = None,
                      progress: bool = True) -> torch.Tensor:
    """Run DPM-Solver++(2M) from x_T (at t = 1) down to t = 1/N -> the final latent [B, C, H, W].

    img2img (x_0 and t_enc = int(strength * steps) given): the original sampler's own late start,
    DPM_Solver.sample(steps=t_enc, t_start=t_{steps - t_enc} of the full run's times), from
    x = alpha x_0 + sigma x_T at t_start. At one step it is one first-order step (the original's
    multistep asserts steps >= 2 there).
    """
    vp = ContinuousVP(schedule, x_T.device)
    batch = x_T.shape[0]
    if x_0 is None:
        if steps < sample_dpm_solver.min_steps:
            raise ValueError(f"steps={steps}: {MIN_STEPS_WHY}")
        times, x = time_steps(vp, steps), x_T
    else:
        t_start = time_steps(vp, steps)[steps - t_enc].item()
        steps = t_enc
        times = time_steps(vp, steps, t_start)
        t = times[:1].expand(batch)
        x = vp.alpha(t).view(-1, 1, 1, 1) * x_0 + vp.sigma(t).view(-1, 1, 1, 1) * x_T

    def data_prediction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = (x - sigma_t eps) / alpha_t, eps from the network (v converted: eps = alpha_t v + sigma_t x).
        A guided model is guided on eps, after the conversion, as the original's model_wrapper does."""
        alpha, sigma = vp.alpha(t).view(-1, 1, 1, 1), vp.sigma(t).view(-1, 1, 1, 1)

        def eps_of(out: torch.Tensor) -> torch.Tensor:
            return alpha * out + sigma * x if prediction == "v" else out

        if isinstance(model, Guided) and model.uncond is not None:
            eps = model.combine(*map(eps_of, model.halves(x, vp.model_time(t))))
        else:
            eps = eps_of(model(x, vp.model_time(t)))
        return (x - sigma * eps) / alpha

    t = times[0].expand(batch)
    x0_list, t_list = [data_prediction(x, t)], [t]
    for step in tqdm(range(1, steps + 1), desc="DPM-Solver++", disable=not progress):
        t = times[step].expand(batch)
        lower_order_final = steps < LOWER_ORDER_FINAL_BELOW and step == steps
        if step == 1 or lower_order_final:
            x = first_order_update(vp, x, t_list[-1], t, x0_list[-1])
        else:
            x = second_order_update(vp, x, x0_list, t_list, t)
        if callback is not None:
            callback(step - 1, vp.model_time(t_list[-1][:1]).item(), x, x0_list[-1])
        x0_list, t_list = x0_list[-(ORDER - 1):], t_list[-(ORDER - 1):] + [t]
        if step < steps:  # the final x0 is not needed
            x0_list.append(data_prediction(x, t))
    return x


sample_dpm_solver.min_steps = ORDER  # txt2img's least number of steps (samplers/common.py min_steps_of)
sample_dpm_solver.min_steps_why = MIN_STEPS_WHY
