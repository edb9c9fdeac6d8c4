"""Benchmark: our UNet and VAE decoder against diffusers' on the CPU, with random weights.

    python tests/benchmarks/unet_vae_bench.py [--repeats 3] [--only unet|vae] [--threads 2]
                                              [--dtypes float32,bfloat16] [--latent 64]

--dtypes: each model runs in each dtype (weights and inputs cast to it), all in the same run, the
rows compared with ours in float32 as well as with diffusers in the same dtype. --latent: the
latent's side (64: 512x512 images).

What is measured (the project's target: ours <= 1.05x the time and <= 1.0x the peak memory):
- unet: the full-size SD v1 UNet, one forward at 64x64 latents, batch 2, context [2, 77, 768];
  ours `ldm.modules.unet.UNet(PRESETS["v1"].unet)` vs `diffusers.UNet2DConditionModel` (v1 config).
- vae: one decode of a [1, 4, 64, 64] latent to a 512x512 image;
  ours `ldm.modules.autoencoder.AutoencoderKL(F8_AUTOENCODER).decode` vs `diffusers.AutoencoderKL`.

Every measurement runs in its own fresh subprocess (the script re-invokes itself with
`--worker NAME`), so that peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) belongs to one model alone.
A worker imports torch, diffusers and ldm whichever model it builds (same baseline RSS for both),
builds its model on the meta device, materialises it with `to_empty` and fills every parameter with
N(0, 0.02) from a seeded generator (no weights are downloaded; timing does not depend on values),
then runs one warm-up call and one timed call under torch.inference_mode(), and reports JSON.
The parent runs `--repeats` rounds, alternating ours and diffusers (ABBA order: ours, diffusers,
diffusers, ours, ...) so that drift in machine load hits both; the time reported is the best of
the rounds, the peak RSS the largest. Each worker also reports the CPU time (user + sys, all
threads) and the minor page faults of its timed call: on a shared machine the wall time swings by
2x or more with other processes' load, so compare wall times only from rounds where CPU time is
about threads x wall time (the call had the cores to itself).

GFLOP/s: the FLOPs are counted ONCE with torch.utils.flop_counter.FlopCounterMode over one call of
OUR model built on the meta device (matmul, convolution and attention FLOPs; elementwise ops and
norms are not counted), and that one count divides both models' times. The same count taken
over diffusers' model is printed alongside as a check that both do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WORKERS = ("unet-ours", "unet-diffusers", "vae-ours", "vae-diffusers")
UNET_BATCH, LATENT_SIZE, CONTEXT_TOKENS, CONTEXT_DIM = 2, 64, 77, 768
VAE_BATCH = 1
INIT_STD = 0.02
SEED = 0


# --- model construction (shared by the workers and the FLOP count) ---------------------------

def build(name: str):
    """The model of worker `name`, built on the current default device (meta or cpu)."""
    import diffusers

    from ldm.config import F8_AUTOENCODER, PRESETS
    from ldm.modules.autoencoder import AutoencoderKL
    from ldm.modules.unet import UNet

    if name == "unet-ours":
        return UNet(PRESETS["v1"].unet)
    if name == "unet-diffusers":
        return diffusers.UNet2DConditionModel(
            sample_size=LATENT_SIZE, in_channels=4, out_channels=4, cross_attention_dim=CONTEXT_DIM,
            attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
        )
    if name == "vae-ours":
        return AutoencoderKL(F8_AUTOENCODER)
    if name == "vae-diffusers":
        return diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4, layers_per_block=2, norm_num_groups=32,
        )
    raise ValueError(f"unknown worker {name!r}; expected one of {WORKERS}")


def make_inputs(name: str, device: str):
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    if name.startswith("unet"):
        x = torch.randn(UNET_BATCH, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
        t = torch.full((UNET_BATCH,), 999, dtype=torch.long)
        context = torch.randn(UNET_BATCH, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
        return tuple(v.to(device) for v in (x, t, context))
    z = torch.randn(VAE_BATCH, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    return (z.to(device),)


def call(name: str, model, inputs):
    if name == "unet-ours":
        x, t, context = inputs
        return model(x, t, context)
    if name == "unet-diffusers":
        x, t, context = inputs
        return model(x, t, encoder_hidden_states=context).sample
    if name == "vae-ours":
        return model.decode(inputs[0])
    return model.decode(inputs[0]).sample


def count_flops(name: str) -> int:
    """FLOPs of one call, counted on the meta device (no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build(name)
    inputs = make_inputs(name, "meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call(name, model, inputs)
    return counter.get_total_flops()


# --- the worker: one model, one fresh process ------------------------------------------------

def current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(name: str, threads: int, dtype_name: str = "float32", latent: int = LATENT_SIZE) -> dict:
    import torch

    # Every worker imports the same code, whichever model it builds, so that the baseline RSS is the
    # same for both. diffusers imports lazily: touch both classes so their modules load here.
    import diffusers
    import ldm.modules.autoencoder  # noqa: F401
    import ldm.modules.unet  # noqa: F401

    diffusers.UNet2DConditionModel, diffusers.AutoencoderKL  # noqa: B018

    global LATENT_SIZE
    LATENT_SIZE = latent
    dtype = getattr(torch, dtype_name)
    torch.set_num_threads(threads)
    rss_imports = current_rss_mib()

    with torch.device("meta"):
        model = build(name)
    model = model.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.normal_(0.0, INIT_STD, generator=generator)
    model = model.to(dtype)
    inputs = tuple(v.to(dtype) if v.is_floating_point() else v for v in make_inputs(name, "cpu"))
    rss_built = current_rss_mib()
    peak_built = peak_rss_mib()

    with torch.inference_mode():
        start = time.perf_counter()
        out = call(name, model, inputs)
        warmup = time.perf_counter() - start
        del out
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu_start, start = time.process_time(), time.perf_counter()
        out = call(name, model, inputs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before

    return {
        "name": name,
        "dtype": dtype_name,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "cpu_seconds": cpu_seconds,  # user + sys of all threads: less sensitive to other load than wall time
        "minor_page_faults": faults,
        "rss_imports_mib": rss_imports,
        "rss_built_mib": rss_built,
        "peak_built_mib": peak_built,
        "peak_rss_mib": peak_rss_mib(),
        "out_shape": list(out.shape),
        "out_std": float(out.float().std()),
        "out_finite": bool(torch.isfinite(out).all()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_worker(name: str, threads: int, dtype: str = "float32", latent: int = LATENT_SIZE) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--threads", str(threads),
               "--dtypes", dtype, "--latent", str(latent)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"worker {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["out_finite"]:
        raise RuntimeError(f"worker {name}: the output has NaN or inf; the timing would be meaningless")
    return result


# --- the parent: alternate, collect, print ---------------------------------------------------

def bench(kind: str, repeats: int, threads: int, dtypes: list[str], latent: int) -> None:
    global LATENT_SIZE
    LATENT_SIZE = latent
    ours_name, theirs_name = f"{kind}-ours", f"{kind}-diffusers"
    flops = count_flops(ours_name)
    flops_theirs = count_flops(theirs_name)
    # Rows: (model, dtype); each round runs every row once, the order reversed every other round (ABBA).
    rows = [(name, dtype) for dtype in dtypes for name in (ours_name, theirs_name)]
    runs: dict[tuple[str, str], list[dict]] = {row: [] for row in rows}
    for round_index in range(repeats):
        for name, dtype in (rows if round_index % 2 == 0 else rows[::-1]):
            result = run_worker(name, threads, dtype, latent)
            runs[name, dtype].append(result)
            print(f"  [{kind} round {round_index + 1}/{repeats}] {name:15s} {dtype:8s} {result['seconds']:7.2f} s "
                  f"(warm-up {result['warmup_seconds']:.2f} s, CPU {result['cpu_seconds']:.2f} s, "
                  f"{result['minor_page_faults']} page faults), peak RSS {result['peak_rss_mib']:7.0f} MiB",
                  flush=True)

    def summary(row) -> dict:
        results = runs[row]
        best = min(r["seconds"] for r in results)
        return {
            "best": best,
            "times": [r["seconds"] for r in results],
            "gflops": flops / best / 1e9,
            "cpu": min(r["cpu_seconds"] for r in results),
            "peak": max(r["peak_rss_mib"] for r in results),
            "built": max(r["rss_built_mib"] for r in results),
            "imports": max(r["rss_imports_mib"] for r in results),
        }

    shape = runs[rows[0]][0]["out_shape"]
    what = (f"UNet forward, x [{UNET_BATCH}, 4, {latent}, {latent}], context "
            f"[{UNET_BATCH}, {CONTEXT_TOKENS}, {CONTEXT_DIM}]" if kind == "unet" else
            f"VAE decode, z [{VAE_BATCH}, 4, {latent}, {latent}] -> {shape}")
    print(f"\n{what}; {threads} threads, best of {repeats} (each after a warm-up, fresh process)")
    print(f"FLOPs per call (FlopCounterMode on ours): {flops / 1e9:.1f} GFLOP "
          f"(diffusers' count: {flops_theirs / 1e9:.1f} GFLOP)")
    header = (f"{'':22s} {'time s':>8s} {'GFLOP/s':>8s} {'CPU s':>7s} {'peak RSS MiB':>13s} {'RSS built':>10s} "
              f"{'peak-built':>11s} {'imports':>8s}  all times")
    print(header)
    for dtype in dtypes:
        ours, theirs = summary((ours_name, dtype)), summary((theirs_name, dtype))
        for label, s in ((f"ours {dtype}", ours), (f"diffusers {dtype}", theirs)):
            print(f"{label:22s} {s['best']:8.2f} {s['gflops']:8.1f} {s['cpu']:7.2f} {s['peak']:13.0f} "
                  f"{s['built']:10.0f} {s['peak'] - s['built']:11.0f} {s['imports']:8.0f}  "
                  + " ".join(f"{t:.2f}" for t in s["times"]))
        print(f"{'ours/diffusers ' + dtype:22s} {ours['best'] / theirs['best']:8.3f} "
              f"{ours['gflops'] / theirs['gflops']:8.3f} {ours['cpu'] / theirs['cpu']:7.3f} "
              f"{ours['peak'] / theirs['peak']:13.3f} {ours['built'] / theirs['built']:10.3f} "
              f"{(ours['peak'] - ours['built']) / (theirs['peak'] - theirs['built']):11.3f}")
    if "float32" in dtypes:
        for dtype in dtypes:
            if dtype != "float32":
                speedup = summary((ours_name, "float32"))["best"] / summary((ours_name, dtype))["best"]
                print(f"ours: float32 time / {dtype} time = {speedup:.3f}")
    print("(time: best wall time; CPU s: best user+sys of the call; peak-built: the call's activation overhead;\n"
          " target: time <= 1.05x, peak RSS <= 1.0x. Wall times are only comparable on an otherwise idle machine.)\n",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each model runs once per round")
    parser.add_argument("--only", choices=("unet", "vae"), default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16")
    parser.add_argument("--latent", type=int, default=LATENT_SIZE, help="the latent's side (64: 512x512 images)")
    parser.add_argument("--worker", choices=WORKERS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    for dtype in dtypes:
        if dtype not in ("float32", "bfloat16"):
            parser.error(f"--dtypes {args.dtypes}: {dtype!r} is not float32 or bfloat16")

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.threads, dtypes[0], args.latent)), flush=True)
        return
    for kind in ("unet", "vae"):
        if args.only in (None, kind):
            bench(kind, args.repeats, args.threads, dtypes, args.latent)


if __name__ == "__main__":
    main()
