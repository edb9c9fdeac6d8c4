"""The run of a generation command (txt2img, img2img, inpaint, depth2img, upscale), on one process
or on many started by torchrun (ldm/distributed.py), resumable (--resume, ldm/manifest.py).

The run is the original scripts' loop, n_iter times over the prompt batches (run_plan); image i
of it (its global index) gets seed --seed + i and the file samples/(base + i), where base, the
first free number in OUTDIR/samples, is chosen once, by the main process, when the run starts.
The unit of work is a batch of --n_samples images: a batch is always made whole, from the same
prompts and seeds, because the numbers of an image depend (by rounding, ~5e-6) on the batch it
was computed in; so the files are the same, byte for byte, whatever number of processes made
them. Each process takes the next batch no process has taken (a counter in torchrun's store),
makes it, and writes its images; the main process writes every image's manifest line, draws the
one progress bar, and at the end makes the grid once (from unmarked copies kept for it in
OUTDIR/.grid-NNNNN/, as the original makes its grid from the unmarked samples, then marks it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm import tqdm

from .. import __version__
from ..distributed import Ranks, join
from ..manifest import Manifest, last_run
from ..outputs import file_hash, file_sha256, save_at, save_grid
from ..warn import warn
from ..watermark import describe, fits, mark_for, put_watermark
from .common import RunError, UsageError, flag_errors

# Flags that change no image: they may differ between a run and its --resume.
# --skip_grid may be given to finish a run whose grid cannot be made.
NOT_COMPARED = {"outdir", "resume", "progress", "threads", "skip_grid", "command_parser"}


@dataclass(frozen=True)
class Batch:
    first: int  # the global index of its first image
    prompts: list[str]
    first_seed: int

    @property
    def indices(self) -> range:
        return range(self.first, self.first + len(self.prompts))


def run_plan(args: argparse.Namespace, batches: list[list[str]]) -> list[Batch]:
    """The original scripts' run: n_iter times over the prompt batches. Image j of the run gets
    seed + j (--fixed_code: every batch starts at --seed)."""
    plan, count = [], 0
    for _ in range(args.n_iter):
        for prompts in batches:
            plan.append(Batch(count, prompts, args.seed + (0 if getattr(args, "fixed_code", False) else count)))
            count += len(prompts)
    return plan


def write_generations(args: argparse.Namespace, sd, batches: list[list[str]], task: Callable,
                      on_start: Callable[[], Path] | None = None) -> int:
    """The run of run_plan(): `task(prompts, **common)` gives the images of one batch, each with its
    `parameters` text in image.info (the tasks put it there); each image goes to its number in
    OUTDIR/samples, marked as the original scripts mark theirs unless --no_watermark, then all of
    them to a grid (made of the unmarked images, then marked once). on_start: run by the main
    process when a run starts (not when it is resumed); it prints the path of what it wrote. A
    failure to write (a full disk) stops the run with RunError saying how many images were written;
    Ctrl-C's (or, under torchrun, SIGTERM's) KeyboardInterrupt carries that count too."""
    outdir, plan = Path(args.outdir), run_plan(args, batches)
    try:
        ranks = join(sd.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    run = None
    try:
        if ranks.size > 1:  # torchrun stops the others with SIGTERM when one fails: end as Ctrl-C would
            signal.signal(signal.SIGTERM, interrupted)
        manifest = ranks.share(lambda: open_manifest(args, sd, outdir, plan, ranks.size))
        if manifest.finished is not None:
            return 0  # --resume of a finished run: open_manifest said so
        if ranks.is_main and on_start is not None and not args.resume:
            print(on_start())
        run = Run(args, sd, outdir, manifest, ranks, task)
        run.make(plan)
        ranks.barrier()
        if ranks.is_main:
            run.finish(plan)
        return 0
    except OSError as error:
        raise RunError(f"writing to {outdir} failed ({error.strerror or error}); {run.written if run else 0} image(s) "
                       f"written before it stay in {outdir / 'samples'}") from None
    except KeyboardInterrupt as interrupt:
        interrupt.images_written = run.written if run else 0
        raise
    finally:
        ranks.close()


def open_manifest(args: argparse.Namespace, sd, outdir: Path, plan: list[Batch], processes: int) -> Manifest:
    """A new run's manifest; with --resume, the last run's, checked against these flags."""
    flags = {k: v for k, v in sorted(vars(args).items()) if k != "command_parser"}
    model = Path(args.ckpt)
    # What a flag names may change under the same name: the sha256 of each file a flag gives.
    files = {k: file_sha256(v) for k, v in flags.items() if k not in NOT_COMPARED and isinstance(v, str)
             and Path(v).is_file()}
    job = {"command": args.command, "images": sum(len(b.prompts) for b in plan), "flags": flags,
           "files_sha256": files, "model_sha256": file_sha256(model) if model.is_file() else None,
           "ldm": __version__, "processes": processes}
    if not args.resume:
        return Manifest.start(outdir, job)
    try:
        manifest = last_run(outdir)
    except ValueError as error:
        raise UsageError(f"--resume: {error}") from None
    if manifest is None:
        raise UsageError(f"--resume: no run to resume in {outdir} (no manifest-NNNNN.jsonl); leave --resume out "
                         "to start one")
    names = option_names(args)
    # A file is compared by its bytes, not its path (it may have moved).
    differ = [f"{names.get(k, k)} {manifest.job['flags'].get(k)!r} there, {v!r} here" for k, v in flags.items()
              if k not in NOT_COMPARED and k not in job["files_sha256"] and manifest.job["flags"].get(k) != v]
    differ += [f"{names.get(k, k)} {flags[k]}: not the file that run used (its sha256 differs)"
               for k, sha256 in job["files_sha256"].items() if manifest.job["files_sha256"].get(k) != sha256]
    if differ:
        raise UsageError(f"--resume: {manifest.path} was made with other flags: {'; '.join(differ)}; give the same "
                         "flags to resume it")
    if manifest.finished is not None:
        print(f"{manifest.path}: the run is finished, all {manifest.images} images are there; nothing to do")
        shutil.rmtree(grid_folder(outdir, manifest), ignore_errors=True)  # if stopped just before removing it
        return manifest
    manifest.drop_torn_line()
    remove_partials(outdir, manifest)
    return manifest


def remove_partials(outdir: Path, manifest: Manifest) -> None:
    """The temporary files a stopped attempt left (a process killed while it wrote a PNG): those of
    this run's numbers in OUTDIR/samples, and any in its grid folder. Before any process resumes."""
    own = {"samples": range(manifest.base, manifest.base + manifest.images), grid_folder(outdir, manifest).name: None}
    for folder, numbers in own.items():
        for path in (outdir / folder).glob(".*.png.partial-*") if (outdir / folder).is_dir() else []:
            if numbers is None or int(path.name[1:].split(".")[0]) in numbers:
                path.unlink()
                print(f"removed {path}, left by the stopped run")


def grid_folder(outdir: Path, manifest: Manifest) -> Path:
    """Where a run keeps the unmarked copy of each image until it makes the grid."""
    return outdir / f".grid-{manifest.base:05d}"


def option_names(args: argparse.Namespace) -> dict[str, str]:
    """dest -> the flag as the user types it (from_file -> --from-file)."""
    return {a.dest: a.option_strings[0] for a in args.command_parser._actions if a.option_strings}


class Run:
    """One process's part of a run: the batches it takes, the files it writes."""

    def __init__(self, args: argparse.Namespace, sd, outdir: Path, manifest: Manifest, ranks: Ranks, task: Callable):
        self.args, self.outdir, self.manifest, self.ranks, self.task = args, outdir, manifest, ranks, task
        self.written, self.reported = 0, False
        self.mark = None if args.no_watermark else mark_for(sd.config)
        self.grid_parts = grid_folder(outdir, manifest)
        self.model_hash = file_hash(args.ckpt) if Path(args.ckpt).is_file() else None
        missing = manifest.images - len(manifest.done)
        self.bar = tqdm(total=missing, unit="image", desc=f"{ranks.size} processes", dynamic_ncols=True,
                        disable=not (ranks.is_main and ranks.size > 1 and args.progress))

    def make(self, plan: list[Batch]) -> None:
        """Take and make batches until none is left (self.written counts this process's images)."""
        todo = [batch for batch in plan if any(i not in self.manifest.done for i in batch.indices)]
        (self.outdir / "samples").mkdir(parents=True, exist_ok=True)
        if not self.args.skip_grid:
            self.grid_parts.mkdir(exist_ok=True)
        args = self.args
        while (taken := self.ranks.take("batch")) < len(todo):
            batch = todo[taken]
            with flag_errors():
                images = self.task(batch.prompts, negative_prompt=args.negative_prompt, steps=args.ddim_steps,
                                   sampler=args.sampler, karras=args.karras, guidance_scale=args.scale,
                                   eta=args.ddim_eta, seed=batch.first_seed,
                                   progress=args.progress and self.ranks.size == 1)
            if self.mark is not None and self.ranks.is_main and not self.reported:
                report_unmarked(images[0], self.mark)
                self.reported = True
            for k, (index, image) in enumerate(zip(batch.indices, images)):
                if index not in self.manifest.done:  # made again only for the others of its batch
                    with ctrl_c_deferred():  # the PNG and its count together
                        line = self.write(index, batch.prompts[k], batch.first_seed + k, image)
                        self.ranks.publish(json.dumps(line))
                        self.written += 1
            if self.ranks.is_main:
                self.record(self.ranks.received())

    def write(self, index: int, prompt: str, seed: int, image: Image.Image) -> dict:
        """Image `index`: its unmarked copy for the grid, its sample; -> its manifest line."""
        args, file, sha256 = self.args, None, None
        if not args.skip_grid:
            save_at(image, self.grid_parts / f"{index:05d}.png", None)
        if not args.skip_save:
            marked = image if self.mark is None else put_watermark(image, self.mark)
            file = f"samples/{self.manifest.base + index:05d}.png"
            sha256 = save_at(marked, self.outdir / file, marked.info["parameters"])
            if self.ranks.size == 1:
                print(self.outdir / file)
        return {"index": index, "prompt": prompt, "negative_prompt": args.negative_prompt,
                "seed": seed, "sampler": args.sampler, "karras": args.karras, "steps": args.ddim_steps,
                "scale": args.scale, "size": f"{image.width}x{image.height}", "model_hash": self.model_hash,
                "file": file, "sha256": sha256, "rank": self.ranks.rank}

    def record(self, lines: list[str]) -> None:
        """Main process: the manifest lines of images written (by any process), and the bar."""
        for line in lines:
            self.manifest.append(json.loads(line))
        self.bar.update(len(lines))

    def finish(self, plan: list[Batch]) -> None:
        """Main process, every image written: the last lines, the grid, the manifest's end."""
        self.record(self.ranks.received())
        self.bar.close()
        missing = [i for batch in plan for i in batch.indices if i not in self.manifest.done]
        if missing:
            raise RunError(f"{self.manifest.path}: images {missing[:10]} were not made; run again with --resume")
        if not self.args.skip_grid:
            parts = [self.grid_parts / f"{i:05d}.png" for i in range(self.manifest.images)]
            if gone := [part for part in parts if not part.is_file()]:
                raise RunError(f"the grid needs the unmarked copy of every image, and {gone[0]} (and "
                               f"{len(gone) - 1} more) is gone; --resume --skip_grid finishes the run without a grid")
            images = [read_rgb(part) for part in parts]
            with ctrl_c_deferred():  # the grid and its name in the manifest together
                grid = save_grid(images, self.outdir, self.args.n_rows or self.args.n_samples, watermark=self.mark)
                print(grid)
                self.manifest.append({"finished": {"images": self.manifest.images, "grid": grid.name}})
        else:
            self.manifest.append({"finished": {"images": self.manifest.images, "grid": None}})
        if self.grid_parts.is_dir():
            shutil.rmtree(self.grid_parts)
        if self.ranks.size > 1:
            print(f"{self.manifest.path}: {self.manifest.images} images")


def read_rgb(path: Path) -> Image.Image:
    """The image of a PNG, its file closed (a grid may be made of thousands)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def interrupted(*_) -> None:
    raise KeyboardInterrupt


def report_unmarked(image, mark: bytes) -> None:
    """Once per run, on the console: images too small for the watermark carry none (their
    parameters text says so too; a grid of 256x256 pixels or more is still marked)."""
    if not fits(*image.size):
        warn(f"{image.width}x{image.height} images are under the 256x256 pixels the invisible watermark needs: "
             f"they carry no {describe(mark)} mark (their parameters text says so)")


@contextlib.contextmanager
def ctrl_c_deferred():
    """Ctrl-C (SIGINT) held back until the block ends, where Python raises KeyboardInterrupt: a
    PNG linked into place is also counted and printed. POSIX only (pthread_sigmask); elsewhere
    the block is not protected."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
