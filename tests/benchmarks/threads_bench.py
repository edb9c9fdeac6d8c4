"""The main job (README line 1: txt2img on the demo model, 6 images of 50 DDIM steps) with torch's
default threads against `--threads 1`, on a quiet machine and with every core kept busy by other
processes (busy loops, one per core): ABBA order, each run a fresh `python -m ldm` process.

    python tests/benchmarks/threads_bench.py [--rounds 1]

Prints the wall time of each run; docs/performance.md has the figures.
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
JOB = ["txt2img", "--prompt", "a red circle on a blue background", "--no-progress"]


def main_job(threads: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as outdir:
        args = [sys.executable, "-m", "ldm", *JOB, "--outdir", outdir] + (["--threads", str(threads)] if threads else [])
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds per setting")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    for load in ("quiet", "busy"):
        burners = busy_loops(cores) if load == "busy" else []
        try:
            times = {"default": [], "--threads 1": []}
            for _ in range(args.rounds):
                for name in ("default", "--threads 1", "--threads 1", "default"):
                    times[name].append(main_job(1 if name == "--threads 1" else None))
        finally:
            for burner in burners:
                burner.kill()
        for name, values in times.items():
            print(f"{load:5} ({cores} cores, {len(burners)} busy loops) {name:12} "
                  + " ".join(f"{v:6.1f} s" for v in values))


if __name__ == "__main__":
    main()
