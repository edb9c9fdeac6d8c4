"""Images per second of one txt2img job on the demo model (a prompts file, 50 DDIM steps, batches
of --n_samples) in one process against the same job on several processes with torchrun: each run
a fresh command, the settings in ABBA order, the wall time from start to exit (model loading and
the grid included), images/s = images / wall time.

    python tests/benchmarks/scale_bench.py [--images 48] [--processes 2] [--rounds 1] [--device cpu]

Settings: one process on torch's default threads (all cores); one process on one thread; N
processes under torchrun (one thread each: torchrun sets OMP_NUM_THREADS=1 for its workers). On a
GPU machine (--device cuda) the single-process row is the one to compare with N GPUs.
docs/scale.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan", "white", "black"]
SHAPES = ["circle", "square", "triangle"]


def prompts(count: int) -> list[str]:
    return [f"a {COLOURS[i % 8]} {SHAPES[i % 3]} on a {COLOURS[(i + 3) % 8]} background" for i in range(count)]


def timed(setting: str, processes: int, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory(prefix="ldm-bench-scale-") as folder:
        path = Path(folder) / "prompts.txt"
        path.write_text("\n".join(prompts(args.images)) + "\n")
        job = ["-m", "ldm", "txt2img", "--from-file", str(path), "--n_iter", "1", "--n_samples", str(args.n_samples),
               "--ddim_steps", str(args.steps), "--outdir", str(Path(folder) / "out"), "--no-progress",
               "--device", args.device]
        if setting == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                       str(processes), *job]
        else:
            command = [sys.executable, *job] + (["--threads", "1"] if setting == "1 thread" else [])
        start = time.perf_counter()
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        made = len(list((Path(folder) / "out" / "samples").glob("*.png")))
        assert made == args.images, f"{setting}: {made} images, expected {args.images}"
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--n_samples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = [("default threads", 1), ("1 thread", 1), ("torchrun", args.processes)]
    times: dict[str, list[float]] = {name: [] for name, _ in settings}
    for _ in range(args.rounds):
        for name, processes in settings + settings[::-1]:  # A B C C B A
            seconds = timed(name, processes, args)
            times[name].append(seconds)
            print(f"{name:16s} {processes} process(es): {seconds:6.1f} s, {args.images / seconds:.2f} images/s",
                  flush=True)
    print(f"\n{args.images} images, {args.steps} DDIM steps, batches of {args.n_samples}, device {args.device}, "
          f"{os.cpu_count()} CPUs; mean of {2 * args.rounds} runs each")
    base = sum(times["default threads"]) / len(times["default threads"])
    for name, processes in settings:
        mean = sum(times[name]) / len(times[name])
        print(f"| {name} | {processes} | {mean:.1f} s | {args.images / mean:.2f} | {base / mean:.2f}x |")


if __name__ == "__main__":
    main()
