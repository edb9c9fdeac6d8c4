"""Benchmark: does torch.compile or channels_last pay for a 50-step image on this CPU?

    python tests/benchmarks/compile_bench.py --ckpt v1.safetensors [--latent 32] [--calls 3] [--threads 2]

The full-size UNet of --ckpt (loaded by from_checkpoint, as a user gets it), one forward at
`--latent` x `--latent` latents, batch 2 (a guided step), context [2, 77, context_dim], float32:
- eager: the module as it is;
- channels_last: the module and its input in torch.channels_last memory format;
- compile: torch.compile(module) (inductor, default mode); its first call is the compile time;
- compile_freezing: the same with torch._inductor.config.freezing = True (weights taken as
  constants and pre-packed for oneDNN: the setting PyTorch recommends for CPU inference).
Each worker is a fresh process; the order is eager, channels_last, compile, compile_freezing,
channels_last, eager (the compile workers are the long ones and run once; --kinds picks a
subset). A worker reports its first call, the best of --calls further calls, and the largest
relative difference of its output to eager's (computed in the worker from the same seeded inputs
by the eager module before it is changed).

A switch pays for a 50-step image when its set-up (compile time, minus one eager call) plus 50
of its steps is less than 50 eager steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def worker(kind: str, ckpt: str, latent: int, calls: int, threads: int) -> dict:
    import torch
    import torch._inductor.config

    sys.path.insert(0, str(ROOT))
    from ldm.pipeline import StableDiffusion

    torch.set_num_threads(threads)
    sd = StableDiffusion.from_checkpoint(ckpt, device="cpu", dtype=torch.float32)
    unet = sd.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, latent, latent, generator=g)
    t = torch.tensor([500, 500])
    context = torch.randn(2, 77, unet.config.context_dim, generator=g)
    with torch.no_grad():
        reference = unet(x, t, context)
        run = unet
        if kind == "channels_last":
            run = unet.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        elif kind in ("compile", "compile_freezing"):
            torch._inductor.config.freezing = kind == "compile_freezing"
            run = torch.compile(unet)
        start = time.perf_counter()
        out = run(x, t, context)
        first = time.perf_counter() - start
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            run(x, t, context)
            times.append(time.perf_counter() - start)
    error = ((out - reference).abs().max() / reference.abs().max()).item()
    return {"kind": kind, "first_s": round(first, 2), "best_s": round(min(times), 3),
            "times_s": [round(s, 3) for s in times], "relative_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a full-size original checkpoint (e.g. load_bench's)")
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default="eager,channels_last,compile,compile_freezing,channels_last,eager")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.ckpt, args.latent, args.calls, args.threads)))
        return
    results: dict[str, list[dict]] = {}
    for kind in args.kinds.split(","):
        command = [sys.executable, __file__, "--worker", kind, "--ckpt", args.ckpt, "--latent", str(args.latent),
                   "--calls", str(args.calls), "--threads", str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            raise SystemExit(f"{kind} failed: {result.stderr[-3000:]}")
        line = json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(line), flush=True)
        results.setdefault(kind, []).append(line)
    eager = min(r["best_s"] for r in results["eager"])
    eager_first = min(r["first_s"] for r in results["eager"])
    for kind in [k for k in results if k != "eager"]:
        best = min(r["best_s"] for r in results[kind])
        setup = max(0.0, min(r["first_s"] for r in results[kind]) - eager_first)
        cost, saved = setup + 50 * best, 50 * eager
        print(f"{kind}: step {best:.3f} s against eager {eager:.3f} s ({best / eager:.3f}x), set-up {setup:.1f} s; "
              f"a 50-step image {cost:.1f} s against {saved:.1f} s: {'pays' if cost < saved else 'does not pay'}")


if __name__ == "__main__":
    main()
