"""Benchmark: the peak memory of a 512x512 txt2img with the full-size v1 model, ours (default and
`low_memory=True`) against diffusers' default CPU pipeline; and a 2048x2048 VAE decode, tiled.

    python tests/benchmarks/memory_bench.py [--rounds 2] [--steps 1] [--keep DIR] [--no-decode]

- The model: random full-size v1 weights (every tensor N(0, 0.02)), written once as an original
  single-file `.safetensors` (ours reads it) and as a diffusers folder by `save_diffusers`
  (diffusers reads that: `StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)`,
  its scheduler swapped for DDIMScheduler, everything else its default: float32, no switch).
- Each run is a fresh process that loads the model and makes one 512x512 image with DDIM, guidance
  7.5 (a batch of 2 through the UNet) and `--steps` steps (the peak does not grow with the steps
  once the first has run); peak RSS is that process's `ru_maxrss`, loading included. The parent
  runs ours, low-memory, diffusers, then the reverse order (ABBA), `--rounds` times; the figure is
  the largest peak of each.
- The decode: ours with `enable_vae_tiling()` (windows of memory.VAE_TILE latent pixels) on a
  random 256x256 latent, in a process of its own, its peak RSS (the target: under 6 GB); 121
  windows, about 18 minutes here (`--no-decode` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a photograph of an astronaut riding a horse"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def worker(name: str, folder: Path, steps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    start = time.perf_counter()
    if name == "diffusers":
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(folder / "v1-diffusers", safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        loaded, after_load = time.perf_counter(), peak_gib()
        with torch.inference_mode():
            pipe(PROMPT, num_inference_steps=steps, height=512, width=512, generator=torch.Generator().manual_seed(0))
    elif name == "decode-2048":
        from ldm.pipeline import StableDiffusion
        from ldm.precision import decode
        from ldm.tasks.tiles import tiled

        sd = StableDiffusion.from_checkpoint(folder / "v1.safetensors", device="cpu", low_memory=True)
        loaded, after_load = time.perf_counter(), peak_gib()
        latent = torch.randn(1, 4, 256, 256, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            image = tiled(lambda z: decode(sd.vae, z), latent, sd.vae_tile, scale=8, progress="VAE tiles")
        assert image.shape == (1, 3, 2048, 2048)
    else:
        from ldm.pipeline import StableDiffusion

        sd = StableDiffusion.from_checkpoint(folder / "v1.safetensors", device="cpu", low_memory=name == "ours-low")
        loaded, after_load = time.perf_counter(), peak_gib()
        with torch.inference_mode():
            sd.txt2img(PROMPT, steps=steps, height=512, width=512, seed=0, progress=False)
    return {"run": name, "peak_after_load_gib": round(after_load, 3), "peak_gib": round(peak_gib(), 3),
            "load_s": round(loaded - start, 1), "run_s": round(time.perf_counter() - loaded, 1)}


def make_model(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    import torch
    from load_bench import make_checkpoints

    from ldm.pipeline import StableDiffusion

    make_checkpoints("v1", [str(folder / "v1.safetensors")])
    StableDiffusion.from_checkpoint(folder / "v1.safetensors", device="cpu", dtype=torch.float32
                                    ).save_diffusers(folder / "v1-diffusers")


def run(name: str, folder: Path, steps: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", name, "--keep", str(folder), "--steps", str(steps)],
                            cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed: {result.stderr[-2000:]}")
    line = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(line), flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--no-decode", action="store_true", help="leave out the 2048x2048 decode")
    parser.add_argument("--keep", metavar="DIR", help="write the model here and keep it (reused if present)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="memory_bench-"))
    if args.worker:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(worker(args.worker, folder, args.steps)))
        return
    if not (folder / "v1-diffusers" / "model_index.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        make_model(folder)
    order = ["ours", "ours-low", "diffusers"]
    peaks: dict[str, list[float]] = {name: [] for name in order}
    for round_ in range(args.rounds):
        for name in (order if round_ % 2 == 0 else order[::-1]):
            peaks[name].append(run(name, folder, args.steps)["peak_gib"])
    worst = {name: max(values) for name, values in peaks.items()}
    print(f"peak RSS, largest of {args.rounds} rounds: " + ", ".join(f"{n} {v:.2f} GiB" for n, v in worst.items()))
    print(f"ours / diffusers {worst['ours'] / worst['diffusers']:.3f} (target <= 0.8); "
          f"low-memory / ours {worst['ours-low'] / worst['ours']:.3f} (target <= 0.5)")
    if not args.no_decode:
        decode = run("decode-2048", folder, args.steps)
        print(f"2048x2048 tiled decode {decode['peak_gib']:.2f} GiB (target < 6 GB = 5.59 GiB)")
    if not args.keep:
        import shutil

        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
