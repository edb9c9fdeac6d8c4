"""Benchmark: load a full-size SD v1 single-file checkpoint with ours and with diffusers' loader.

    python tests/benchmarks/load_bench.py [--repeats 2] [--keep DIR] [--accelerate-path DIR]

The project's target: ours <= 0.5x the time and <= 1.0x the peak memory of diffusers' single-file
loader. What is measured:

- the file: a random full-size v1 model (1.07 G parameters, fp32, 4.3 GB) in the ORIGINAL
  single-file layout, written twice by `StableDiffusion.save_checkpoint`: `.safetensors` and `.ckpt`
  (torch zip pickle {"state_dict": ...}). It is built on the meta device, materialised with
  `to_empty` and every tensor filled with N(0, 0.02) from a seeded generator. No download.
- ours: `StableDiffusion.from_checkpoint(path, device="cpu", dtype=torch.float32)`.
- diffusers: `StableDiffusionPipeline.from_single_file(path, config=DIR, local_files_only=True,
  torch_dtype=torch.float32, safety_checker=None)` with HF_HUB_OFFLINE=1. diffusers normally fetches
  each component's config and the CLIP tokenizer from the hub; DIR is a local diffusers-format
  folder holding only those files (unet/, vae/, text_encoder/ configs, tokenizer/, scheduler/,
  model_index.json), written by checkpoints_convert.diffusers' helpers for v1.
  Without `accelerate` importable, diffusers builds every module with its random initialisation
  and then copies the weights in; with it (its `low_cpu_mem_usage` default) it builds on the meta
  device. `--accelerate-path DIR` (a folder made by `pip install --target DIR accelerate psutil`)
  adds a second diffusers row with accelerate on the worker's path, so both are measured.

Every load runs in its own fresh subprocess (the script re-invokes itself with `--worker NAME
PATH`), which imports only what its loader needs, then times the one call until the model or
pipeline object is returned (nothing more is run). Peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss`
of that process, printed with the RSS before the call (the imports) and their difference (the
load alone), and the imports' time. Both loaders may leave the weights memory-mapped from the file,
to be paged in by the first forward; so the worker then reads one element of every 4 KiB page of
every weight and prints that time added to the load's, and the peak RSS after it ("+touch").
Last, per-component sums of the weights check that both loaders hold the same numbers. The parent
alternates ours and diffusers (ABBA) over `--repeats` rounds; time is the best round, peak RSS the
largest. The file is in the page cache for every run (warm start), as it is just after it was
written. The checkpoints go to a temporary folder deleted at the end, or to `--keep DIR`, kept
(and reused by a later run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FORMATS = ("safetensors", "ckpt")
TARGET_TIME, TARGET_RSS = 0.5, 1.0  # ours / diffusers


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB (1e3 * 1e3)


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


# -- workers: each runs in a fresh process and prints one JSON line --------------------------------

def make_checkpoints(preset: str, paths: list[str], seed: int = 0) -> dict:
    import torch

    from ldm.config import PRESETS
    from ldm.pipeline import StableDiffusion

    with torch.device("meta"):
        sd = StableDiffusion(PRESETS[preset])
    sd = sd.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in sd.state_dict().values():
            tensor.normal_(0.0, 0.02, generator=generator)
    for path in paths:
        sd.save_checkpoint(path)
    return {"parameters": sum(p.numel() for p in sd.parameters())}


def unique_weights(module) -> list:
    return list({t.data_ptr(): t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}.values())


def touch_pages(components: dict) -> float:
    """Read one element of every 4 KiB page of every weight: pages in whatever the loader left
    memory-mapped, as a model's first forward would. -> seconds."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for module in components.values():
            for tensor in unique_weights(module):
                tensor.reshape(-1)[:: max(1, 4096 // tensor.element_size())].sum()
    return time.perf_counter() - start


def weight_sums(components: dict) -> dict[str, tuple[float, float]]:
    """(sum, sum of |per-tensor sums|) of each component's weights, to compare loaders."""
    import torch

    sums = {}
    with torch.no_grad():
        for name, module in components.items():
            per_tensor = [float(t.sum()) for t in unique_weights(module)]
            sums[name] = (sum(per_tensor), sum(abs(x) for x in per_tensor))
    return sums


def load_ours(path: str) -> tuple[float, dict]:
    import torch

    from ldm.pipeline import StableDiffusion

    start = time.perf_counter()
    sd = StableDiffusion.from_checkpoint(path, device="cpu", dtype=torch.float32)
    seconds = time.perf_counter() - start
    return seconds, {"unet": sd.unet, "vae": sd.vae, "text_encoder": sd.text_encoder}


def load_diffusers(path: str, config_dir: str) -> tuple[float, dict]:
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_single_file(path, config=config_dir, local_files_only=True,
                                                    torch_dtype=torch.float32, safety_checker=None)
    seconds = time.perf_counter() - start
    return seconds, {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}


def worker(name: str, path: str, config_dir: str | None) -> dict:
    import_start = time.perf_counter()
    import torch  # noqa: F401  (both loaders need it; imported before the clock starts)

    if name == "ours":
        import ldm.pipeline  # noqa: F401
    else:
        from diffusers import StableDiffusionPipeline  # noqa: F401  (resolves its lazy imports, before the clock)
    import_seconds = time.perf_counter() - import_start
    accelerate = None
    if name != "ours":
        from diffusers.utils import is_accelerate_available
        accelerate = is_accelerate_available()
    rss_before = current_rss_gb()
    if name == "ours":
        seconds, components = load_ours(path)
    else:
        seconds, components = load_diffusers(path, config_dir)
    peak = rss_gb()
    rss_after = current_rss_gb()
    touch_seconds = touch_pages(components)
    peak_touched = rss_gb()
    return {"seconds": seconds, "peak_rss_gb": peak, "rss_before_gb": rss_before, "rss_after_gb": rss_after,
            "touch_seconds": touch_seconds, "peak_rss_touched_gb": peak_touched, "sums": weight_sums(components),
            "import_seconds": import_seconds, "accelerate": accelerate}


# -- the parent ------------------------------------------------------------------------------------

def write_diffusers_configs(preset: str, folder: Path) -> Path:
    """A diffusers pipeline folder holding configs and tokenizer files only (no weights)."""
    import torch

    from checkpoints_convert import diffusers as to_folder
    from ldm.config import PRESETS

    config = PRESETS[preset]
    folder.mkdir(parents=True, exist_ok=True)
    for component, values in to_folder.component_configs(config, torch.float32).items():
        (folder / component).mkdir(exist_ok=True)
        (folder / component / to_folder.FILES[component][1]).write_text(to_folder._json(values))
    (folder / "tokenizer").mkdir(exist_ok=True)
    for name, text in to_folder.tokenizer_files(config).items():
        (folder / "tokenizer" / name).write_text(text, encoding="utf-8")
    index = to_folder.model_index(PRESETS["v1"])  # the same StableDiffusionPipeline index for v1 and demo
    (folder / "model_index.json").write_text(to_folder._json(index))
    return folder


def run_worker(args: list[str], extra_path: str | None = None, timeout: float = 900) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               DIFFUSERS_VERBOSITY="error", TRANSFORMERS_VERBOSITY="error")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, __file__, "--worker", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="rounds per loader and format (best time kept)")
    parser.add_argument("--keep", metavar="DIR", help="write the checkpoints here and keep them (reused if present)")
    parser.add_argument("--accelerate-path", metavar="DIR",
                        help="also measure diffusers with accelerate importable from DIR")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--preset", default="v1", choices=["v1", "demo"],
                        help="v1 (the benchmark) or demo (a seconds-long smoke run of the plumbing)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        name, *rest = args.worker
        if name == "make":
            result = make_checkpoints(rest[0], rest[1:])
        else:
            result = worker(name, rest[0], rest[1] if len(rest) > 1 else None)
        print(json.dumps(result))
        return

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="load_bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = {fmt: folder / f"random-{args.preset}.{fmt}" for fmt in args.formats}
        to_make = [str(p) for p in paths.values() if not p.exists()]
        if to_make:
            start = time.perf_counter()
            made = run_worker(["make", args.preset, *to_make])
            print(f"wrote {', '.join(to_make)} ({made['parameters'] / 1e9:.3f} G parameters, "
                  f"{time.perf_counter() - start:.0f} s)")
        config_dir = write_diffusers_configs(args.preset, folder / f"diffusers-configs-{args.preset}")
        loaders = {"ours": None, "diffusers": None}
        if args.accelerate_path:
            loaders["diffusers+accelerate"] = args.accelerate_path
        results = {}  # (loader, format) -> list of worker results
        for fmt, path in paths.items():
            print(f"{fmt}: {path.stat().st_size / 1e9:.2f} GB")
            for round_ in range(args.repeats):
                order = list(loaders) if round_ % 2 == 0 else list(reversed(loaders))  # ABBA
                for loader in order:
                    worker_args = ["ours" if loader == "ours" else "diffusers", str(path), str(config_dir)]
                    result = run_worker(worker_args, loaders[loader])
                    results.setdefault((loader, fmt), []).append(result)
                    print(f"  round {round_ + 1} {loader:21s} {result['seconds']:7.2f} s  "
                          f"peak {result['peak_rss_gb']:5.2f} GB  (+touch {result['touch_seconds']:.2f} s, "
                          f"{result['peak_rss_touched_gb']:.2f} GB)", flush=True)
        report(results, loaders, paths, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def report(results: dict, loaders: dict, paths: dict, repeats: int) -> None:
    print(f"\nbest time of {repeats}, largest peak RSS; CPU, fp32, {os.cpu_count()} cores, warm page cache")
    header = (f"{'loader':23s} {'format':12s} {'time (s)':>9s} {'peak RSS (GB)':>14s} {'RSS before':>11s} "
              f"{'load delta':>11s} {'import+load':>12s} {'+touch (s)':>11s} {'peak +touch':>12s}")
    print(header)
    print("-" * len(header))
    summary = {}
    for fmt in paths:
        for loader in loaders:
            runs = results[(loader, fmt)]
            best = {
                "seconds": min(r["seconds"] for r in runs),
                "peak": max(r["peak_rss_gb"] for r in runs),
                "before": max(r["rss_before_gb"] for r in runs),
                "with_import": min(r["import_seconds"] + r["seconds"] for r in runs),
                "touch": min(r["seconds"] + r["touch_seconds"] for r in runs),
                "peak_touched": max(r["peak_rss_touched_gb"] for r in runs),
                "sums": runs[0]["sums"], "accelerate": runs[0]["accelerate"],
            }
            summary[(loader, fmt)] = best
            label = loader
            if best["accelerate"] is not None:
                label = "diffusers+accelerate" if best["accelerate"] else "diffusers, no accelerate"
            print(f"{label:23s} {fmt:12s} {best['seconds']:9.2f} {best['peak']:14.2f} {best['before']:11.2f} "
                  f"{best['peak'] - best['before']:11.2f} {best['with_import']:12.2f} {best['touch']:11.2f} "
                  f"{best['peak_touched']:12.2f}")
    print("\n(time: the load call alone, after the imports; RSS before: after the imports, before the call;\n"
          " load delta: peak RSS - RSS before; import+load: the imports (torch and ldm, or torch and diffusers)\n"
          " plus the call, in a fresh process; +touch: the call plus reading one element of every 4 KiB page\n"
          " of every weight (pages in what the loader left memory-mapped); peak +touch: the peak RSS then)")

    print(f"\nours / diffusers (target: time <= {TARGET_TIME}x, peak RSS <= {TARGET_RSS}x)")
    for fmt in paths:
        ours = summary[("ours", fmt)]
        for loader in [name for name in loaders if name != "ours"]:
            theirs = summary[(loader, fmt)]
            time_ratio, rss_ratio = ours["seconds"] / theirs["seconds"], ours["peak"] / theirs["peak"]
            delta_ratio = (ours["peak"] - ours["before"]) / max(theirs["peak"] - theirs["before"], 1e-9)
            verdict = "MET" if time_ratio <= TARGET_TIME and rss_ratio <= TARGET_RSS else "MISSED"
            with_import_ratio = ours["with_import"] / theirs["with_import"]
            print(f"  {fmt:12s} vs {loader:21s} time {time_ratio:5.2f}x  peak RSS {rss_ratio:5.2f}x  "
                  f"-> target {verdict}   (load delta {delta_ratio:5.2f}x, import+load {with_import_ratio:5.2f}x, "
                  f"+touch {ours['touch'] / theirs['touch']:5.2f}x)")
            for component, (total, scale) in ours["sums"].items():
                other, _ = theirs["sums"].get(component, (float("nan"), 0.0))
                if not abs(total - other) <= 1e-5 * max(scale, 1.0):
                    print(f"    WARNING: {component} weights differ: sum {total} (ours) vs {other} ({loader})")


if __name__ == "__main__":
    main()
