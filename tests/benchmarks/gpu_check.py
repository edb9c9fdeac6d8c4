"""The GPU checks of issue 19, as one short script for a session that is lent a GPU.

    python tests/benchmarks/gpu_check.py [--device cuda] [--out DIR] [--steps 20] [--rounds 2]
    python tests/benchmarks/gpu_check.py --device cpu --tiny      # a rehearsal of the script here

1. parity: random full-size v1 weights (every tensor N(0, 0.02), tests/benchmarks/load_bench.py
   make_checkpoints) loaded in float32 and in float16 on the device; the UNet's output at 64x64
   latents (batch 2) and the VAE's 512x512 decode, float16 against float32: the largest relative
   difference, and whether the float16 decode is finite (ldm.precision.decode redoes it in float32
   with a warning when it is not).
2. speed and memory: `python -m ldm bench --against diffusers` on the same file at 512x512 (DDIM,
   --steps steps, guidance 7.5) in modes fp16, fp32 and low-memory, ABBA over --rounds, each row a
   process of its own; the table has the peak GPU memory torch allocated per stage.
Everything goes to DIR (default: a temporary folder): parity.json, bench.txt, bench.json.

--tiny: the demo model's size instead of v1 (64x64 images, 2 steps), float32 against bfloat16,
so that the script's own logic can be run on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "benchmarks")]


def relative(ours, reference) -> float:
    return ((ours.double() - reference.double()).abs().max() / reference.double().abs().max()).item()


def parity(path: Path, device: str, half: str, latent: int) -> dict:
    import torch

    from ldm.pipeline import StableDiffusion
    from ldm.precision import decode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=g)
    t = torch.tensor([10, 900])
    results = {}
    outputs = {}
    for dtype in ("float32", half):
        sd = StableDiffusion.from_checkpoint(path, device=device, dtype=dtype)
        context = torch.randn(2, 77, sd.config.unet.context_dim, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            unet = sd.unet(x.to(device, sd.dtype), t.to(device), context.to(device, sd.dtype)).float().cpu()
            raw = sd.vae.decode(x[:1].to(device, sd.dtype)).float().cpu()
            safe = decode(sd.vae, x[:1].to(device, sd.dtype)).float().cpu()
        outputs[dtype] = (unet, raw, safe)
        del sd
    (unet32, decoded32, _), (unet16, raw16, safe16) = outputs["float32"], outputs[half]
    results = {"unet_relative_error": relative(unet16, unet32), "vae_relative_error": relative(safe16, decoded32),
               f"vae_{half}_finite": bool(raw16.isfinite().all()), "unet_reference_std": unet32.std().item(),
               "vae_reference_std": decoded32.std().item()}
    assert results["unet_reference_std"] > 0 and results["vae_reference_std"] > 0, "a trivial reference"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", help="where the results go (default: a temporary folder, printed)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the demo model's size: a rehearsal without a GPU")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-model-") as tmp:
        if args.tiny:
            from ldm.demo import CHECKPOINT as path
        else:
            from load_bench import make_checkpoints

            path = Path(tmp) / "v1.safetensors"
            make_checkpoints("v1", [str(path)])
        print(f"model ready ({time.perf_counter() - start:.0f} s)", flush=True)
        half = "bfloat16" if args.tiny else "float16"
        results = parity(path, args.device, half, 16 if args.tiny else 64)
        (out / "parity.json").write_text(json.dumps(results, indent=1))
        print("parity:", json.dumps(results), flush=True)
        size = "64" if args.tiny else "512"
        modes = "fp32,bf16" if args.tiny else "fp16,fp32,low-memory"
        command = [sys.executable, "-m", "ldm", "bench", "--ckpt", str(path), "--device", args.device,
                   "--H", size, "--W", size, "--ddim_steps", str(2 if args.tiny else args.steps),
                   "--against", "diffusers", "--modes", modes, "--rounds", str(args.rounds),
                   "--json", str(out / "bench.json")]
        bench = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        (out / "bench.txt").write_text(bench.stdout + bench.stderr)
        print(bench.stdout, bench.stderr[-2000:] if bench.returncode else "", flush=True)
        if bench.returncode:
            raise SystemExit(f"bench failed ({bench.returncode})")
    print(f"done in {time.perf_counter() - start:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
