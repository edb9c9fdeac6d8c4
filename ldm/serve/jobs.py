"""The job queue: one worker thread runs the jobs, one after another, in the order they came.

The HTTP server keeps answering while a job runs (its handlers wait on the job's Future in their
own threads). What /progress, /interrupt and /skip read and set is A1111's shared.state, kept here
(State): the job's batches (job_count, job_no), the sampler's step, and a preview of pred_x0.
A job is a function of its Run; a job that raises fails alone: its Future carries the exception,
and the worker goes on with the next.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import threading
import time
from typing import Callable

from PIL import Image

log = logging.getLogger("ldm.serve")


class Stopped(Exception):
    """Raised inside the sampler's callback when /interrupt or /skip asked the job to stop."""


@dataclasses.dataclass
class State:
    """A1111's State.dict() fields, and what /progress computes from."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    started: float = 0.0
    preview: Image.Image | None = None

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in ("skipped", "interrupted", "stopping_generation", "job",
                                                       "job_count", "job_timestamp", "job_no", "sampling_step",
                                                       "sampling_steps")}


class Run:
    """What a running job reports to, and is stopped through."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def batch(self, index: int, steps: int, preview: Callable | None) -> Callable:
        """Batch `index` of the job begins, its sampler running `steps` steps -> the sampler's
        callback(i, t, x_t, pred_x0): it counts the step, keeps a preview of image 0's pred_x0
        every `preview_every` steps (preview(pred_x0) -> PIL), and raises Stopped when asked."""
        worker = self.worker
        with worker.lock:
            state = worker.state
            state.job_no, state.sampling_step, state.sampling_steps, state.skipped = index, 0, steps, False

        def callback(i, t, x_t, pred_x0):
            with worker.lock:
                if state.interrupted or state.skipped:
                    raise Stopped()
                state.sampling_step = i + 1
                state.sampling_steps = max(state.sampling_steps, i + 1)
                due = preview is not None and worker.preview_every > 0 and (i + 1) % worker.preview_every == 0
            if due:
                image = preview(pred_x0)
                with worker.lock:
                    state.preview = image

        return callback

    @property
    def job_timestamp(self) -> str:
        with self.worker.lock:
            return self.worker.state.job_timestamp

    @property
    def interrupted(self) -> bool:
        with self.worker.lock:
            return self.worker.state.interrupted


class Worker:
    def __init__(self, preview_every: int = 10):
        self.jobs: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.state = State()
        self.preview_every = preview_every  # A1111's show_progress_every_n_steps
        self.numbers = itertools.count(1)
        self.thread = threading.Thread(target=self.loop, name="ldm-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, name: str, job: Callable[[Run], object], job_count: int = 1, about: str = ""
               ) -> concurrent.futures.Future:
        """Queue `job`; its Future gets what it returns (or raises). `about`: for the log."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:  # numbered in the order it is queued
            number = next(self.numbers)
            self.jobs.put((number, name, job, job_count, about, future))
        return future

    def run(self, name: str, job: Callable[[Run], object], job_count: int = 1, about: str = ""):
        """submit, then wait for the result (in the calling thread)."""
        return self.submit(name, job, job_count, about).result()

    def loop(self) -> None:
        while True:
            number, name, job, job_count, about, future = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            with self.lock:
                self.state = State(job=name, job_count=job_count, job_timestamp=time.strftime("%Y%m%d%H%M%S"),
                                   started=time.monotonic())
            log.info("job %d: %s%s started", number, name, f" ({about})" if about else "")
            try:
                future.set_result(job(Run(self)))
                log.info("job %d: %s done", number, name)
            except BaseException as error:  # noqa: BLE001 - the job fails alone; the worker goes on
                log.info("job %d: %s failed (%s: %s)", number, name, type(error).__name__, error)
                future.set_exception(error)
            finally:
                with self.lock:
                    self.state = dataclasses.replace(self.state, job="", job_count=0, preview=None)

    def interrupt(self) -> None:
        with self.lock:
            if self.state.job:
                self.state.interrupted = True

    def skip(self) -> None:
        with self.lock:
            if self.state.job:
                self.state.skipped = True

    def progress(self) -> tuple[float, float, dict, Image.Image | None]:
        """(progress, eta_relative, state, preview) as A1111's progressapi computes them: idle, 0 and
        0; running, 0.01 + the finished batches' share + this batch's steps' share, capped at 1."""
        with self.lock:
            state = dataclasses.replace(self.state)
        if state.job_count == 0:
            return 0.0, 0.0, state.as_dict(), None
        progress = 0.01 + state.job_no / state.job_count
        if state.sampling_steps:
            progress += state.sampling_step / state.sampling_steps / state.job_count
        progress = min(progress, 1.0)
        elapsed = time.monotonic() - state.started
        return progress, elapsed / progress - elapsed, state.as_dict(), state.preview
