"""The checkpoints a server can load, and the one it has loaded.

With --models-dir, the .ckpt and .safetensors files under that folder, found by walking it (its
sub-folders too, as A1111 lists models/Stable-diffusion): each is named by its path relative to
the folder ("sub/model.safetensors"), and only files whose real path (symlinks followed) lies
inside the folder are listed. A request names a model by that list alone (title, name, stem, or
short hash, as A1111's checkpoint aliases): a name is never turned into a path, so "..", an
absolute path or a symlink out of the folder cannot be reached. Without it, the one --ckpt (or
the bundled demo model).

One model is loaded at a time; loading happens on the worker thread (jobs.py), so it never
overlaps a generation.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..outputs import file_sha256
from .errors import Refused

SUFFIXES = (".ckpt", ".safetensors")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # relative to the models folder ("sub/model.safetensors"); the file's name for --ckpt
    path: Path  # the real path

    @property
    def model_name(self) -> str:
        """A1111's model_name: the name without its extension, "/" as "_"."""
        return self.stem.replace("/", "_").replace("\\", "_")

    @property
    def stem(self) -> str:
        return self.name[: -len(suffix)] if (suffix := Path(self.name).suffix).lower() in SUFFIXES else self.name


class Checkpoints:
    def __init__(self, models_dir: Path | None, ckpt: Path | None):
        self.models_dir = None if models_dir is None else models_dir.resolve()
        self.ckpt = ckpt
        self.hashes: dict[tuple[Path, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, once loaded
        self.listed: list[Checkpoint] = []
        self.refresh()

    def refresh(self) -> list[Checkpoint]:
        """Rescan (A1111's refresh-checkpoints)."""
        if self.models_dir is None:
            self.listed = [Checkpoint(self.ckpt.name, self.ckpt.resolve())]
            return self.listed
        found = []
        for folder, subfolders, files in os.walk(self.models_dir, followlinks=False):
            subfolders.sort()
            for file in sorted(files):
                if not file.lower().endswith(SUFFIXES):
                    continue
                real = (Path(folder) / file).resolve()
                if real.is_file() and real.is_relative_to(self.models_dir):
                    found.append(Checkpoint((Path(folder) / file).relative_to(self.models_dir).as_posix(), real))
        self.listed = found
        return found

    def known_hash(self, checkpoint: Checkpoint) -> str | None:
        """The short hash (10 hex digits of the sha256) once the file was loaded (a listing never
        hashes gigabytes)."""
        sha256 = self.sha256(checkpoint)
        return sha256[:10] if sha256 else None

    def sha256(self, checkpoint: Checkpoint) -> str | None:
        return self.hashes.get(self.file_key(checkpoint))

    @staticmethod
    def file_key(checkpoint: Checkpoint) -> tuple[Path, int, int]:
        try:
            status = checkpoint.path.stat()
        except OSError:
            return checkpoint.path, -1, -1
        return checkpoint.path, status.st_size, status.st_mtime_ns

    def title(self, checkpoint: Checkpoint) -> str:
        """A1111's title: "name [short hash]", or the name while the hash is not known."""
        short = self.known_hash(checkpoint)
        return f"{checkpoint.name} [{short}]" if short else checkpoint.name

    def find(self, wanted: str, field: str = "sd_model_checkpoint") -> Checkpoint:
        """The listed checkpoint a title, name, stem or short hash names; Refused (404) otherwise."""
        for checkpoint in self.listed:
            short = self.known_hash(checkpoint)
            aliases = {self.title(checkpoint), checkpoint.name, checkpoint.model_name,
                       checkpoint.stem} | ({short, f"{checkpoint.name} [{short}]"} if short else set())
            if wanted in aliases:
                return checkpoint
        raise Refused(field, f"no model {wanted!r} here; models: {[self.title(c) for c in self.listed]} "
                             "(GET /sdapi/v1/sd-models; POST /sdapi/v1/refresh-checkpoints after adding files)",
                      status=404)

    def as_json(self) -> list[dict]:
        """GET /sdapi/v1/sd-models."""
        result = []
        for checkpoint in self.listed:
            short = self.known_hash(checkpoint)
            yaml = checkpoint.path.with_suffix(".yaml")
            result.append({"title": self.title(checkpoint), "model_name": checkpoint.model_name, "hash": short,
                           "sha256": self.sha256(checkpoint), "filename": str(checkpoint.path),
                           "config": str(yaml) if yaml.is_file() else None})
        return result


class LoadedModel:
    """The model in memory and the checkpoint it came from. `load(path)` -> StableDiffusion."""

    def __init__(self, checkpoints: Checkpoints, load: Callable):
        self.checkpoints, self.load = checkpoints, load
        self.checkpoint: Checkpoint | None = None
        self.sd = None

    def get(self, checkpoint: Checkpoint):
        """The model of `checkpoint`, loaded in place of the one in memory when it is another (the
        old one is let go first, so that two are never held). A file that fails to load leaves the
        server with its previous model, loaded again."""
        if checkpoint == self.checkpoint:
            return self.sd
        previous = self.checkpoint
        self.sd = self.checkpoint = None
        gc.collect()
        try:
            self.sd = self.load(checkpoint.path)
        except Exception:
            if previous is not None:
                self.sd = self.load(previous.path)
                self.checkpoint = previous
            raise
        self.checkpoint = checkpoint
        if checkpoint.path.is_file():
            self.checkpoints.hashes[self.checkpoints.file_key(checkpoint)] = file_sha256(checkpoint.path)
        return self.sd
