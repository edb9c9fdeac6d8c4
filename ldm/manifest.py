"""The manifest of a generation run: OUTDIR/manifest-NNNNN.jsonl, JSON lines, NNNNN the number of
the run's first sample (its numbering base). The first line describes the run; then one line per
image as it is written; the last line says the run finished:

    {"job": {"command": "txt2img", "base": 12, "images": 30000, "flags": {...}, "model_sha256": ...}}
    {"index": 0, "prompt": ..., "seed": 42, ..., "file": "samples/00012.png", "sha256": ...}
    ...
    {"finished": {"images": 30000, "grid": "grid-0003.png"}}

Image i of the run (its global index, 0-based) is always samples/(base + i), so the numbers say
nothing of how many processes made them. A run reserves its range of numbers when it starts (the
manifest is linked into place, whole, at its base, past every sample and every other run's range,
and a run that finds the name taken counts again), so two runs in one folder never write the same
number. Each line is written with one write() by the one process that writes the manifest: a
line is there whole or, if that process was killed in the middle of it, is the torn last line,
which reading ignores. `--resume` reads the last run's manifest and makes only the images it has
no line for.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from checkpoints_convert.save import new_partial

from .outputs import SAMPLE_PATTERN, next_number

NAME = re.compile(r"manifest-(\d{5,})\.jsonl")


@dataclass
class Manifest:
    path: Path
    job: dict
    done: dict[int, dict] = field(default_factory=dict)  # index -> its line
    finished: dict | None = None
    torn: int = 0  # the bytes of a torn last line


    @property
    def base(self) -> int:
        return self.job["base"]

    @property
    def images(self) -> int:
        return self.job["images"]

    @classmethod
    def start(cls, outdir: Path, job: dict) -> Manifest:
        """A new manifest in `outdir` for a run of job["images"] images, at the first number past the
        samples there and past every other run's range; job gets its "base"."""
        outdir.mkdir(parents=True, exist_ok=True)
        while True:
            samples = outdir / "samples"
            ends = [m.base + m.images for m in runs_in(outdir)]
            base = max([next_number(samples, SAMPLE_PATTERN) if samples.is_dir() else 0, *ends])
            path, header = outdir / f"manifest-{base:05d}.jsonl", {**job, "base": base}
            # Written whole under a temporary name, then linked into place: no run ever reads another
            # run's manifest without its first line.
            partial, fd = new_partial(path, lambda name: os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write((json.dumps({"job": header}) + "\n").encode("utf-8"))
                os.link(partial, path)
                return cls(path, header)
            except FileExistsError:  # another run took this base meanwhile: count again
                continue
            finally:
                os.unlink(partial)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest at `path`; a torn last line (its writer was killed while writing it) is left
        out; any other line that is not one of the three kinds is an error naming it."""
        text = path.read_text(encoding="utf-8")
        lines, torn = text.split("\n"), ""
        if lines and lines[-1] != "":  # no newline after it: a line cut short, or a whole one
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                torn, lines = lines[-1], lines[:-1]
        entries = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error.msg}); the manifest was changed by hand "
                                 "or by something else") from None
        if not entries or "job" not in entries[0]:
            raise ValueError(f"{path}: the first line does not describe a run ({{\"job\": ...}})")
        manifest = cls(path, entries[0]["job"], torn=len(torn.encode("utf-8")))
        for entry in entries[1:]:
            if "index" in entry:
                manifest.done[entry["index"]] = entry
            elif "finished" in entry:
                manifest.finished = entry["finished"]
        return manifest

    def drop_torn_line(self) -> None:
        """Cut a torn last line off the file, so that the next line starts a line of its own."""
        if self.torn:
            os.truncate(self.path, self.path.stat().st_size - self.torn)
            self.torn = 0

    def append(self, entry: dict) -> None:
        """One line, with one write() (see the module's docstring)."""
        line = (json.dumps(entry) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if "index" in entry:
            self.done[entry["index"]] = entry
        elif "finished" in entry:
            self.finished = entry["finished"]


def runs_in(outdir: Path) -> list[Manifest]:
    """The manifests in `outdir`, by base."""
    if not outdir.is_dir():
        return []
    paths = sorted((p for p in outdir.iterdir() if NAME.fullmatch(p.name)), key=lambda p: int(p.name[9:-6]))
    return [Manifest.read(p) for p in paths]


def last_run(outdir: Path) -> Manifest | None:
    """The run of `outdir` with the highest base (the last one started), None if there is none."""
    runs = runs_in(outdir)
    return runs[-1] if runs else None
