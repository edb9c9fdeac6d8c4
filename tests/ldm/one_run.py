"""Both outputs of a task from one run: the images and the latent its sampler ended on.

A parity test compares both with the original's. Asking the task twice (output="latent", then
output="tensor") sampled the same thing twice: on a full-size model that is 10 s of every such
test. Here one run with output="tensor" is watched: `finish` (ldm/tasks/common.py) receives the
sampler's final latent z and, for output="latent", returns exactly that z; it is recorded on the
way in."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch


def latent_and_image(task: Callable, *args, **kwargs) -> dict[str, torch.Tensor]:
    """task: a StableDiffusion method (sd.txt2img, sd.inpaint, ...), run once on args and kwargs
    with output="tensor"; its `finish` is that of the module of ldm/tasks/ named like it.
    -> {"latent": z, "tensor": images}."""
    module = importlib.import_module(f"ldm.tasks.{task.__name__}")
    finish, seen = module.finish, []

    def recording(sd, z, output, **fields):
        assert output == "tensor", f"the run must ask for output='tensor', not {output!r}"
        seen.append(z.clone())
        return finish(sd, z, output, **fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "finish", recording)
        images = task(*args, output="tensor", **kwargs)
    assert len(seen) == 1, f"{task.__name__} called finish {len(seen)} times"
    return {"latent": seen[0], "tensor": images}
