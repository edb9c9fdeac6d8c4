"""`python -m ldm bench`: each stage of txt2img on this machine: wall time, GFLOP/s and its share
of the measured matmul peak, peak RSS; with `--against diffusers`, the same run through diffusers'
pipeline, row by row in separate processes, in ABBA order."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..tasks.common import check_sampling, prompts_for
from .bench_flops import matmul_peak
from .bench_run import MODES, measure_ours
from .common import RunError, UsageError, add_model_flags, check_model_flags, flag_errors, requested_device


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="time each stage of txt2img on this machine, alone or against "
                                               "diffusers", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--H", type=int, help="image height (default: the model's size)")
    parser.add_argument("--W", type=int, help="image width (default: the model's size)")
    parser.add_argument("--n_samples", type=int, default=1, help="batch size")
    parser.add_argument("--ddim_steps", type=int, default=10, help="sampling steps to time")
    parser.add_argument("--scale", type=float, default=7.5, help="guidance scale (1 halves the UNet batch)")
    parser.add_argument("--against", choices=["diffusers"],
                        help="also run diffusers' StableDiffusionPipeline with the same settings (needs diffusers "
                             "installed; a --ckpt file is converted to a diffusers folder in a temporary folder)")
    parser.add_argument("--modes", default="fp32,bf16,low-memory",
                        help=f"with --against: the rows, each run by both ({', '.join(MODES)})")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --against: rounds over the rows, every other one in reverse order (ABBA); "
                             "times are the mean of the rounds, peak RSS the largest")
    parser.add_argument("--json", metavar="FILE", help="with --against: also write every run's measurements here "
                                                       "(never over an existing file)")


def run(args: argparse.Namespace) -> int:
    check_model_flags(args)
    with flag_errors():
        prompts_for("", args.n_samples)
        check_sampling(sampler="ddim", steps=args.ddim_steps, guidance_scale=args.scale, eta=None)
    if args.against:
        return against(args)
    if args.modes != "fp32,bf16,low-memory" or args.rounds != 2 or args.json:
        raise UsageError("--modes, --rounds and --json are for the rows of --against diffusers; without it --dtype, "
                         "--bf16 and --low_memory choose the one row")
    spec = {"ckpt": args.ckpt, "variant": args.variant, "device": args.device, "batch": args.n_samples,
            "steps": args.ddim_steps, "scale": args.scale, "height": args.H, "width": args.W,
            "mode": "low-memory" if args.low_memory else "fp32", "dtype": args.dtype,  # --dtype wins over the mode's
            "offload": args.offload}
    with flag_errors():
        row = measure_ours(spec)
    print(f"{row['variant']} on {row['device']} ({row['dtype']}{', low memory' if args.low_memory else ''}, "
          f"{row['threads']} CPU threads), batch {args.n_samples}, {row['size'][0]}x{row['size'][1]}, "
          f"guidance scale {args.scale}")
    # sd.dtype is the compute dtype, also when the weights are stored in another (low memory)
    compute = getattr(torch, row["dtype"].removeprefix("torch."))
    print(table([("ours", [row], matmul_peak(compute, row["device"]))]))
    sampling = row["stages"][2]
    print(f"  {'sampling steps per second':<36} {row['steps'] / sampling['seconds']:8.3f}")
    return 0


def against(args: argparse.Namespace) -> int:
    """Every mode of --modes run by ours and by diffusers, each row in a process of its own
    (bench_run.py), --rounds times, every other round in reverse order: A B B A."""
    if args.dtype or args.low_memory or args.offload:
        raise UsageError("--against diffusers runs the rows of --modes; --dtype, --bf16, --low_memory and --offload "
                         "choose the one row without it")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown or len(set(modes)) != len(modes):
        raise UsageError(f"--modes {args.modes}: give distinct modes among {', '.join(MODES)}, separated by commas")
    if args.rounds < 1:
        raise UsageError(f"--rounds {args.rounds}: must be >= 1")
    if importlib.util.find_spec("diffusers") is None:
        raise UsageError("--against diffusers: diffusers is not installed (pip install diffusers; it is in this "
                         "project's test extra)")
    if args.json and Path(args.json).exists():
        raise UsageError(f"--json {args.json} exists; choose another name (files are never overwritten)")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    device = requested_device(args)
    with tempfile.TemporaryDirectory(prefix="ldm-bench-") as tmp:
        folder = args.ckpt if Path(args.ckpt).is_dir() else diffusers_folder(args, Path(tmp) / "diffusers")
        spec = {"ckpt": args.ckpt, "variant": args.variant, "device": args.device, "diffusers_folder": folder,
                "batch": args.n_samples, "steps": args.ddim_steps, "scale": args.scale, "height": args.H,
                "width": args.W, "threads": torch.get_num_threads()}
        order = [(impl, mode) for mode in modes for impl in ("ours", "diffusers")]
        results: dict[tuple[str, str], list[dict]] = {row: [] for row in order}
        for round_ in range(args.rounds):
            for impl, mode in (order if round_ % 2 == 0 else order[::-1]):
                print(f"round {round_ + 1}/{args.rounds}: {impl} {mode} ...", file=sys.stderr, flush=True)
                results[impl, mode].append(run_row(spec | {"impl": impl, "mode": mode}))
                seconds = ", ".join(f"{stage['seconds']:.2f}" for stage in results[impl, mode][-1]["stages"])
                print(f"  stage times {seconds} s", file=sys.stderr, flush=True)
    first = results[order[0]][0]
    computes = {mode: getattr(torch, MODES[mode][0]) for mode in modes}
    peaks = {dtype: matmul_peak(dtype, device) for dtype in set(computes.values())}
    print(f"{first['variant']} on {first['device']}, {first['threads']} CPU threads, batch {args.n_samples}, "
          f"{first['size'][0]}x{first['size'][1]}, {first['steps']} DDIM steps, guidance scale {args.scale}; "
          f"{args.rounds} round(s) ABBA, each row a process of its own")
    rates = (f"{str(dtype).removeprefix('torch.')} {rate:.1f} GFLOP/s" for dtype, rate in peaks.items())
    print("matmul peak (the fastest of bench_flops.PEAK_SHAPES): " + ", ".join(rates))
    for mode in modes:  # diffusers computes the same networks: its rates use our count of the work
        for run_ in results["diffusers", mode]:
            run_["flops"] = results["ours", mode][0]["flops"]
    print(table([(f"{impl} {mode}", results[impl, mode], peaks[computes[mode]]) for impl, mode in order]))
    if args.json:
        runs = [run_ | {"round": i + 1} for row in order for i, run_ in enumerate(results[row])]
        with open(args.json, "x") as file:
            json.dump({"settings": {k: v for k, v in spec.items() if k != "diffusers_folder"} | {"rounds": args.rounds},
                       "matmul_peak_gflops": {str(d): g for d, g in peaks.items()}, "runs": runs}, file, indent=1)
    print("ours / diffusers, time:")
    for mode in modes:
        ours, theirs = mean_times(results["ours", mode]), mean_times(results["diffusers", mode])
        print(f"  {mode:<11}" + ", ".join(f"{stage} {ours[stage] / theirs[stage]:.2f}x" for stage in ours))
    return 0


def diffusers_folder(args: argparse.Namespace, folder: Path) -> str:
    """--ckpt written as a diffusers folder by `python -m ldm convert` (in a process of its own,
    so that this one never holds the model while the rows run)."""
    command = [sys.executable, "-m", "ldm", "convert", args.ckpt, str(folder), "--to", "diffusers"]
    command += ["--variant", args.variant] if args.variant else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RunError(f"converting {args.ckpt} for diffusers failed: {last_line(result.stderr)}")
    return str(folder)


def run_row(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "ldm.cli.bench_run", json.dumps(spec)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RunError(f"the {spec['impl']} {spec['mode']} row failed: {last_line(result.stderr)}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def mean_times(runs: list[dict]) -> dict[str, float]:
    """stage -> its mean wall time over the runs of one row."""
    return {stage["stage"]: statistics.mean(run["stages"][i]["seconds"] for run in runs)
            for i, stage in enumerate(runs[0]["stages"])}


def table(rows: list[tuple[str, list[dict], float]]) -> str:
    """rows: (label, the runs of that row, the matmul peak of its compute dtype in GFLOP/s). A run
    on CUDA adds the peak GPU memory torch allocated (bench_run.Stages)."""
    vram = any("peak_vram_gib" in stage for _, runs, _ in rows for run in runs for stage in run["stages"])
    lines = [f"  {'row':<20} {'stage':<36} {'time s':>8} {'GFLOP':>9} {'GFLOP/s':>8} {'of peak':>8} "
             f"{'peak RSS GiB':>12}" + (f" {'peak VRAM GiB':>13}" if vram else "")]
    for label, runs, peak in rows:
        times = mean_times(runs)
        for i, (stage, seconds) in enumerate(times.items()):
            rss = max(run["stages"][i]["peak_rss_gib"] for run in runs)
            flops = runs[0].get("flops", {}).get(stage)
            rate = "" if flops is None else f"{flops / 1e9:9.1f} {flops / 1e9 / seconds:8.1f} " \
                                            f"{100 * flops / 1e9 / seconds / peak:7.0f}%"
            rate = rate or f"{'-':>9} {'-':>8} {'-':>8}"
            line = f"  {label if i == 0 else '':<20} {stage:<36} {seconds:8.3f} {rate} {rss:12.2f}"
            if vram:
                line += f" {max(run['stages'][i].get('peak_vram_gib', 0.0) for run in runs):13.2f}"
            lines.append(line)
    return "\n".join(lines)
