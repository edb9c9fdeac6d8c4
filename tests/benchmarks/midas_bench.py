"""Benchmark: our MiDaS DPT-Hybrid against the ORIGINAL (stable-diffusion-sdkit 2.1.5's
ldm/modules/midas over timm 0.6.13) on the CPU, one forward at 384x384, fp32, random weights.

    python tests/benchmarks/midas_bench.py [--repeats 3] [--threads 2] [--size 384]

The project's target: ours <= 1.05x the original's time. Every measurement runs in its own fresh
subprocess (the script re-invokes itself with `--worker NAME`); the original's worker puts the
reference wheels first on sys.path and stands in for torchvision as the parity harness does
(tests/reference/run_midas.py). Both build their network, fill it with the same random values (the
original's state dict mapped to ours through the key table, so both compute the same function),
run one warm-up and one timed call under torch.inference_mode(), and report wall time, CPU time
and peak RSS. The parent alternates the two in ABBA order over --repeats rounds (ours, original,
original, ours, ...); the time reported is the best round of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = 0


def original_model():
    from tests.reference.original_ldm import original_root
    from tests.reference.wheels import OPENCV, TIMM_FOR_MIDAS, unpacked_wheel

    roots = [str(original_root()), str(unpacked_wheel(*TIMM_FOR_MIDAS)), str(unpacked_wheel(*OPENCV))]
    sys.path[:0] = roots
    sys.path.insert(0, str(ROOT / "tests" / "reference"))
    for name in [m for m in sys.modules if m == "ldm" or m.startswith("ldm.")]:
        del sys.modules[name]  # ours was imported by the reference helpers' package; the original's is wanted
    from run_midas import stand_in_for_torchvision

    stand_in_for_torchvision()
    import ldm

    if not ldm.__file__.startswith(roots[0]):
        raise SystemExit(f"imported the wrong ldm ({ldm.__file__}); expected the original under {roots[0]}")
    from ldm.modules.midas.midas.dpt_depth import DPTDepthModel

    return DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)


def random_state(model) -> None:
    """The original's state dict, every tensor random (the parity tests' randomise)."""
    sys.path.insert(0, str(ROOT / "tests" / "reference"))
    from random_weights import randomise

    randomise(model, SEED)


def worker(name: str, threads: int, size: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if name == "original":
        model = original_model()
        random_state(model)
        run = model
    else:
        from checkpoints_convert.keymap import midas as keys
        from ldm.config import MiDaSConfig
        from ldm.modules.midas import MiDaS

        reference = original_layout_state()
        model = MiDaS(MiDaSConfig())
        table = keys.original_to_ours(MiDaSConfig())
        model.load_state_dict({table[k]: v for k, v in reference.items() if k in table})
        run = model
    model.eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(SEED + 1)) * 2 - 1
    with torch.inference_mode():
        run(x)
        start_cpu, start = time.process_time(), time.perf_counter()
        run(x)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"name": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def original_layout_state():
    """The random state dict in the original's names, made by a subprocess that builds the original
    (so both workers load the same values without importing each other's `ldm`)."""
    from safetensors.torch import load_file

    path = Path("/tmp") / f"midas-bench-state-{SEED}.safetensors"
    if not path.exists():
        result = subprocess.run([sys.executable, __file__, "--dump-state", str(path)], cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
    return load_file(path)


def dump_state(path: str) -> None:
    from safetensors.torch import save_file

    model = original_model()
    random_state(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def run_worker(name: str, threads: int, size: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", name, "--threads", str(threads), "--size",
                             str(size)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dump-state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.dump_state:
        dump_state(args.dump_state)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.size)))
        return
    original_layout_state()  # made once, before any timing
    rounds = {"ours": [], "original": []}
    for r in range(args.repeats):
        for name in (("ours", "original") if r % 2 == 0 else ("original", "ours")):
            result = run_worker(name, args.threads, args.size)
            rounds[name].append(result)
            print(json.dumps(result), flush=True)
    best = {name: min(r["wall_s"] for r in results) for name, results in rounds.items()}
    print(f"best of {args.repeats}: ours {best['ours']:.3f} s, original {best['original']:.3f} s, "
          f"ours / original {best['ours'] / best['original']:.3f}")


if __name__ == "__main__":
    main()
