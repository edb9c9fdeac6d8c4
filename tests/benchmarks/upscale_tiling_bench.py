"""Benchmark: tiled x4 upscaling, its peak memory and its seams.

    python tests/benchmarks/upscale_tiling_bench.py [--size 512] [--steps 2] [--whole-size 256]
    python tests/benchmarks/upscale_tiling_bench.py --only seams

Three measurements, each in its own fresh subprocess (the script re-invokes itself with
`--worker NAME`), so that the peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) is one run's alone:

- tiled: the full-size x4 upscaler (PRESETS["x4-upscaler"], every tensor random as the parity
  tests make them: no weights can be downloaded here) upscales a smooth --size x --size image
  (colour ramps and one slow wave) to 4x with sd.upscale(tile="auto") (192-pixel tiles over 32
  pixels of overlap above 256x256 inputs), --steps DDIM steps, guidance 9: wall time, peak RSS,
  and the seam ratio of its latent and of its image (below).
- whole: the same at --whole-size, the largest input tile="auto" runs whole: the peer that says
  what the tiling saves.
- seams: the demo model's TRAINED VAE (random weights make no smooth image to see a seam in)
  decodes the latent of a smooth 256x256 image whole, in 16-latent-pixel tiles blended over 4
  pixels, and in the same tiles cut hard (overlap 0, each tile decoded alone and placed): seam
  ratio of each and its largest difference from the whole decode.

Seam ratio: with J_c the mean over rows and channels of |x[..., c+1] - x[..., c]| (the jump
between two neighbouring columns; likewise rows), the largest J at a tile border (every column
pair inside a stretch two windows share, or at the line where cut tiles meet) over the largest J
elsewhere. Near 1 or below: the borders are like any other place of the image; a visible seam is a
border jump well above the image's own.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def smooth_image(size: int):
    """[1, 3, size, size] in [-1, 1]: a red ramp left to right, a green one top to bottom, blue a
    slow wave of two periods."""
    import torch
    ramp = torch.linspace(-1, 1, size)
    wave = torch.sin(torch.linspace(0, 4 * math.pi, size))
    return torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size),
                        0.8 * wave[:, None] * wave[None, :]])[None]


def border_lines(size: int, tile: int | None, overlap: int, scale: int) -> set[int]:
    """The column pairs (c, c + 1), named by c, that lie at a tile border in an output of
    size * scale: inside the stretches neighbouring windows share, or where cut windows meet."""
    from ldm.tasks.tiles import starts
    if tile is None or size <= tile:
        return set()
    first = starts(size, tile, overlap)
    lines = set()
    for previous, start in zip(first, first[1:]):
        end = previous + tile  # the previous window's end; the stretch [start, end) is shared
        lines.update(range(start * scale - 1, max(end, start) * scale))
    return lines


def seam_ratio(x, tile: int | None, overlap: int, scale: int) -> float:
    """max jump at the borders / max jump elsewhere, over columns and rows (module docstring)."""
    ratios = []
    for axis in (3, 2):
        jumps = x.double().diff(dim=axis).abs().mean(dim=[d for d in range(4) if d != axis])
        lines = border_lines(x.shape[axis] // scale, tile, overlap, scale)
        inside = [c for c in range(len(jumps)) if c not in lines]
        if lines:
            ratios.append(float(jumps[sorted(lines)].max() / jumps[inside].max()))
    return max(ratios) if ratios else float("nan")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def worker_upscale(size: int, steps: int, tile) -> dict:
    import torch

    from ldm.config import PRESETS
    from ldm.pipeline import StableDiffusion
    from ldm.tasks.tiles import overlap_for
    from ldm.tasks.upscale import tile_for
    from tests.reference.random_weights import randomise

    torch.manual_seed(0)
    sd = StableDiffusion(PRESETS["x4-upscaler"]).eval()
    randomise(sd, 0)
    built = peak_rss_gib()
    used = tile_for(tile, size, size)
    start = time.perf_counter()
    images = sd.upscale(smooth_image(size), "a photograph", steps=steps, seed=1, output="tensor", tile=tile)
    wall = time.perf_counter() - start
    overlap = overlap_for(used) if used else 0
    return {"size": size, "output": list(images.shape[2:]), "steps": steps, "tile": used, "overlap": overlap,
            "wall_s": round(wall, 1), "rss_after_build_gib": round(built, 2), "peak_rss_gib": round(peak_rss_gib(), 2),
            "image_seam_ratio": round(seam_ratio(images, used, overlap, 4), 3),
            "image_std": round(float(images.std()), 3)}


def worker_seams() -> dict:
    import torch

    from ldm.pipeline import StableDiffusion
    from ldm.tasks.tiles import tiled

    sd = StableDiffusion.demo()
    scale, tile, overlap = sd.config.autoencoder.downsampling_factor, 16, 4
    with torch.no_grad():
        z = sd.vae.encode(smooth_image(256)).mean
        # Images are in [-1, 1]: clamped as every task clamps them before they are seen.
        whole = sd.vae.decode(z).clamp(-1, 1)
        blended = tiled(sd.vae.decode, z, tile, scale=scale, overlap=overlap).clamp(-1, 1)
        cut = tiled(sd.vae.decode, z, tile, scale=scale, overlap=0).clamp(-1, 1)
    return {"latent": list(z.shape[2:]), "tile": tile, "overlap": overlap,
            "whole_seam_ratio_at_the_blended_lines": round(seam_ratio(whole, tile, overlap, scale), 3),
            "blended_seam_ratio": round(seam_ratio(blended, tile, overlap, scale), 3),
            "cut_seam_ratio": round(seam_ratio(cut, tile, 0, scale), 3),
            "whole_mean_error": round(float((whole - smooth_image(256)).abs().mean()), 3),
            "blended_mean_diff_from_whole": round(float((blended - whole).abs().mean()), 3),
            "cut_mean_diff_from_whole": round(float((cut - whole).abs().mean()), 3)}


def run_worker(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--whole-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", choices=["tiled", "whole", "seams"])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        name, *rest = args.worker
        if name == "seams":
            print(json.dumps(worker_seams()))
        else:
            size, steps = int(rest[0]), int(rest[1])
            print(json.dumps(worker_upscale(size, steps, "auto" if name == "tiled" else None)))
        return
    runs = {"seams": ("seams",), "whole": ("whole", str(args.whole_size), str(args.steps)),
            "tiled": ("tiled", str(args.size), str(args.steps))}
    for name, worker_args in runs.items():
        if args.only in (None, name):
            print(name, json.dumps(run_worker(*worker_args)), flush=True)


if __name__ == "__main__":
    main()
