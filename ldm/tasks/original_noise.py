"""x_T as the original scripts/txt2img.py draws it (`--noise original`), to reproduce its runs.

This project draws each image's x_T from its own CPU generator seeded `seed + i`, so an image does
not depend on its batch or its device (tasks/common.py). The original script instead calls
`seed_everything(seed)` once and lets its sampler draw from the device's global generator:

    start_code = torch.randn([n_samples, C, H // f, W // f], device=device)  # --fixed_code only, before the loop
    for n in range(n_iter):
        for prompts in data:
            sampler.sample(S=steps, batch_size=n_samples, shape=[C, H // f, W // f], x_T=start_code, ...)

and inside sample() x_T = torch.randn(shape, device=device) when no start_code is given, then every
step draws again from the same generator: DDIM's p_sample_ddim takes noise_like(x.shape) at every
step, even at eta = 0, where it is multiplied by sigma_t = 0; PLMS one per step and one more in its
first step (its pseudo improved Euler start calls get_x_prev_and_pred_x0 twice); the v2 scripts'
DPM-Solver++ none. So the x_T of a batch depends on every draw before it, and OriginalNoise replays
that stream: its own generator on the device, seeded as seed_everything seeds the global one
(torch.manual_seed(seed): the same stream), each batch's x_T drawn whole and the sampler's draws
skipped.

On CUDA (the v1 script runs only there) this is the original's x_T, batch for batch: the model is
built on the CPU and its random initialisation never touches the CUDA generator. On the CPU (the
v2 script's --device cpu) the original builds its model after seed_everything, and that
initialisation takes an amount of draws from the CPU generator that depends on the model's
classes; those draws are not replayed here, so a CPU run gives the draws the original's loop makes
from a fresh seed, not its script's.
"""

from __future__ import annotations

import torch

from samplers.schedule import ddim_timesteps

# The samplers of the original scripts (--plms, v2's --dpm, DDIM by default).
ORIGINAL_SAMPLERS = ("ddim", "plms", "dpm_solver")


def sampler_draws(sampler: str, steps: int) -> int:
    """How many batch-shaped N(0, I) draws the original's sampler takes after x_T, for `steps`
    steps (the DDIM schedule's length: the original's make_ddim_timesteps, tasks' samplers alike)."""
    count = len(ddim_timesteps(steps))
    return {"ddim": count, "plms": count + 1, "dpm_solver": 0}[sampler]


class OriginalNoise:
    """The original script's x_T stream for one run. shape: [n_samples, C, h, w], what each batch
    draws (its first rows are used when a batch has fewer prompts, as in a --from-file run's last)."""

    def __init__(self, seed: int, device: torch.device | str, shape: tuple[int, int, int, int], *, sampler: str,
                 steps: int, fixed_code: bool = False):
        if sampler not in ORIGINAL_SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: the original scripts run {', '.join(ORIGINAL_SAMPLERS)}; "
                             "their noise stream is only known for those")
        self.shape, self.draws = shape, sampler_draws(sampler, steps)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.start_code = self.draw() if fixed_code else None  # --fixed_code: drawn once, before the loop

    def draw(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.generator.device)

    def next_x_T(self, count: int) -> torch.Tensor:
        """The next batch's x_T, [count, C, h, w], with the sampler's own draws of that batch skipped."""
        x_T = self.start_code if self.start_code is not None else self.draw()
        for _ in range(self.draws):
            self.draw()
        return x_T[:count]
