"""How far bfloat16 runs land from float32 ones (docs/performance.md, "bfloat16 on the CPU").

    python tests/benchmarks/bf16_quality.py [--only demo|full]

- demo: the bundled model at the quality test's settings (DDIM, 50 steps, eta 0, guidance 7.5),
  the 17 held-out captions x 2 seeds, once in float32 and once in bfloat16 with the same seeds:
  the PSNR of each bfloat16 image against its float32 twin, and the pixel classifier's verdicts
  (tests/ldm/demo/pixel_classifier.py) on both sets.
- full: the full-size v1 and v2 models with every tensor random (tests/reference/random_weights.py),
  txt2img at 64x64 (an 8x8 latent), 4 DDIM steps, guidance 7.5, batch 2: the final latent's
  relative error max|bf16 - fp32| / max|fp32| and its RMS counterpart, and the same for one UNet
  call (the first step's prediction).

Both dtypes run in one process, one after the other (the numbers, not the times, are the result).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SEEDS = (1000, 2000)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def demo() -> None:
    from ldm.demo.shapes import HELD_OUT, caption
    from ldm.pipeline import StableDiffusion
    from tests.ldm.demo.test_demo_model import judged

    captions = [caption(*c) for c in HELD_OUT]
    images = {}
    for dtype in ("float32", "bfloat16"):
        sd = StableDiffusion.demo(device="cpu", dtype=dtype)
        images[dtype] = [np.asarray(image) for seed in SEEDS
                         for image in sd.txt2img(captions, steps=50, guidance_scale=7.5, seed=seed, progress=False)]
    texts = [text for _ in SEEDS for text in captions]
    values = [psnr(a, b) for a, b in zip(images["float32"], images["bfloat16"])]
    finite = [v for v in values if math.isfinite(v)]
    print(f"demo: {len(values)} images (17 held-out captions x seeds {SEEDS}), DDIM 50 steps, guidance 7.5")
    print(f"  PSNR bf16 vs fp32: mean {np.mean(finite):.1f} dB, median {np.median(finite):.1f} dB, "
          f"min {min(finite):.1f} dB; identical images: {len(values) - len(finite)}")
    for dtype, batch in images.items():
        colours = shapes = 0
        for text, image in zip(texts, batch):
            _, both, shape_ok = judged(text, image)
            colours += both
            shapes += shape_ok
        print(f"  {dtype:8s}: both colours right {colours}/{len(batch)}, shape right {shapes}/{len(batch)}")


def full() -> None:
    from ldm.config import PRESETS
    from ldm.pipeline import StableDiffusion
    from tests.reference.random_weights import randomise
    from tests.reference.original_ldm import relative_error

    for variant in ("v1", "v2"):
        with torch.device("meta"):
            sd = StableDiffusion(PRESETS[variant])
        sd = sd.to_empty(device="cpu").eval()
        randomise(sd, seed=3)
        runs = {}
        for dtype in (torch.float32, torch.bfloat16):
            model = sd if dtype == torch.float32 else copy.deepcopy(sd).to(dtype)
            first = []
            latent = model.txt2img(["a photograph of an astronaut riding a horse"] * 2, height=64, width=64, steps=4,
                                   guidance_scale=7.5, seed=11, output="latent", progress=False,
                                   callback=lambda i, t, x, pred_x0: first.append(pred_x0) if i == 0 else None)
            runs[dtype] = latent, first[0]
            del model
        for what, index in (("final latent", 0), ("first step's x0 prediction", 1)):
            want, got = runs[torch.float32][index], runs[torch.bfloat16][index]
            assert want.abs().max() > 0.1, "trivial reference"
            print(f"{variant} (random full-size weights), {what}: max relative error "
                  f"{relative_error(got, want):.4f}, RMS relative error "
                  f"{((got - want).norm() / want.norm()).item():.4f}")
        del sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("demo", "full"))
    args = parser.parse_args()
    with torch.no_grad():
        if args.only in (None, "demo"):
            demo()
        if args.only in (None, "full"):
            full()


if __name__ == "__main__":
    main()
