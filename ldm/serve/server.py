"""What one running server holds: the checkpoints and the loaded model, the job worker, where
images go, its limits, and the few A1111 options it has (GET/POST /sdapi/v1/options).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import Refused
from .jobs import Worker
from .models import Checkpoint, Checkpoints, LoadedModel


@dataclass(frozen=True)
class Limits:
    """What one request may ask. A1111's own UI allows 2048 pixels a side, 8 images a batch and
    100 batches; its API checks nothing, which a server others can reach should not copy."""

    side: int = 2048  # width, height
    pixels: int = 2048 * 2048  # width x height
    batch_size: int = 8
    n_iter: int = 100
    upload_pixels: int = 4096 * 4096  # an uploaded image, checked from its header before it is decoded
    body_bytes: int = 64 * 1024 * 1024  # a request body (base64 images inside)


# A1111 options and this server's values: the ones it reports; SETTABLE can be changed.
FIXED_OPTIONS = {
    "samples_format": "png", "samples_save": True, "grid_save": True, "return_grid": True, "enable_pnginfo": True,
    "eta_ddim": 0.0, "eta_ancestral": 1.0, "eta_noise_seed_delta": 0, "CLIP_stop_at_last_layers": 1,
    "randn_source": "CPU", "face_restoration": False, "tiling": False, "sd_vae": "Automatic",
    "live_previews_enable": True,
}
SETTABLE = ("sd_model_checkpoint", "show_progress_every_n_steps")


class Server:
    def __init__(self, checkpoints: Checkpoints, load: Callable, outdir: Path, no_watermark: bool = False,
                 limits: Limits = Limits()):
        self.checkpoints, self.outdir, self.no_watermark, self.limits = checkpoints, outdir, no_watermark, limits
        self.model = LoadedModel(checkpoints, load)
        self.worker = Worker()
        self.selected: Checkpoint = checkpoints.listed[0]

    def start(self, checkpoint: Checkpoint) -> None:
        """Load the first model now, on the worker (a bad file stops the server before it serves)."""
        self.worker.run("load", lambda run: self.model.get(checkpoint))
        self.selected = checkpoint

    def options(self) -> dict[str, Any]:
        return {"sd_model_checkpoint": self.checkpoints.title(self.selected),
                "sd_checkpoint_hash": self.checkpoints.sha256(self.selected),
                "outdir_samples": str(self.outdir / "samples"), "outdir_grids": str(self.outdir),
                "show_progress_every_n_steps": self.worker.preview_every, **FIXED_OPTIONS}

    def set_options(self, wanted: dict[str, Any], field: str = "options") -> None:
        """POST /options: the model switches (loaded on the worker, after the jobs queued before);
        an option at this server's value is accepted; any other value, or an option this server
        does not have, is refused by name."""
        self.check_options(wanted, field, SETTABLE)
        if "show_progress_every_n_steps" in wanted:
            self.worker.preview_every = wanted["show_progress_every_n_steps"]
        if "sd_model_checkpoint" in wanted:
            checkpoint = self.checkpoints.find(wanted["sd_model_checkpoint"], f"{field}.sd_model_checkpoint")
            self.worker.run("load", lambda run: self.model.get(checkpoint))
            self.selected = checkpoint

    def check_options(self, wanted: dict[str, Any], field: str, settable: tuple[str, ...]) -> None:
        current = self.options()
        for key, value in wanted.items():
            if key == "show_progress_every_n_steps" and (type(value) is not int or value < 0):
                raise Refused(f"{field}.{key}", f"{value!r}: a preview every N steps needs an int >= 0 (0: none)")
            if key in settable:
                continue
            if key not in current:
                raise Refused(f"{field}.{key}", f"no such option here; options: {sorted(current)}")
            if value != current[key]:
                raise Refused(f"{field}.{key}", f"{value!r}: this server's value is {current[key]!r} and does not "
                                                "change")

    def checkpoint_for(self, overrides: dict[str, Any] | None) -> Checkpoint:
        """The model a generation runs on: override_settings' sd_model_checkpoint, else the selected
        one. Other overrides are accepted at this server's values only."""
        overrides = overrides or {}
        self.check_options(overrides, "override_settings", ("sd_model_checkpoint",))
        if "sd_model_checkpoint" in overrides:
            return self.checkpoints.find(overrides["sd_model_checkpoint"], "override_settings.sd_model_checkpoint")
        return self.selected
