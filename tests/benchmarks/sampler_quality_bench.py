"""Quality per step of every sampler, on the bundled demo model and its 17 held-out captions.

For each sampler (the k-diffusion ones also with Karras sigmas) and 5, 10, 20, 30, 50 steps:
- the distance of the final latent to a 1000-step DDIM run from the same x_T (relative, over the
  whole batch: ||z - z_ref|| / ||z_ref||): how close the sampler comes to the probability-flow
  ODE's solution (the ancestral and SDE samplers draw other images by design: for them the
  distance says how different, not how wrong);
- the demo's pixel classifier (tests/ldm/demo/pixel_classifier.py) on the decoded images: the
  share with both colours right and with the shape right;
- the UNet calls spent (a guided call, [uncond, cond] in one batch, counts once).

    python tests/benchmarks/sampler_quality_bench.py [--seeds 2] [--out docs/sampler-quality.json]
    python tests/benchmarks/sampler_quality_bench.py --render docs/sampler-quality.json

The first writes the measurements as JSON (about 15 minutes on 2 CPU cores); --render prints the
Markdown table of docs/samplers.md and draws docs/sampler-quality.png from that JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ldm.demo.shapes import HELD_OUT, caption  # noqa: E402
from ldm.pipeline import StableDiffusion  # noqa: E402
from samplers import SAMPLERS, options_of  # noqa: E402
from tests.ldm.demo.pixel_classifier import classify  # noqa: E402

STEPS = (5, 10, 20, 30, 50)
REFERENCE_STEPS = 1000
GUIDANCE = 7.5  # the demo's default (the command line's)
FIRST_SEED = 1000


def configurations() -> list[tuple[str, bool]]:
    """(sampler, karras) for every sampler of the table, the k-diffusion ones both ways."""
    return [(name, karras) for name, sample in SAMPLERS.items()
            for karras in ((False, True) if "karras" in options_of(sample) else (False,))]


def run(sd: StableDiffusion, prompts: list[str], seed: int, sampler: str, karras: bool, steps: int
        ) -> tuple[torch.Tensor, int]:
    """(final latent, UNet calls) of one txt2img run (eta: each sampler's default)."""
    calls = []
    hook = sd.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        latent = sd.txt2img(prompts, sampler=sampler, karras=karras, steps=steps, seed=seed, guidance_scale=GUIDANCE,
                            output="latent", progress=False)
    finally:
        hook.remove()
    return latent, len(calls)


def accuracy(sd: StableDiffusion, latent: torch.Tensor, combinations: list) -> tuple[float, float]:
    """(share with both colours right, share with the shape right) of the decoded images."""
    images = ((sd.vae.decode(latent / sd.config.scale_factor).float() + 1) / 2).clamp(0, 1)
    arrays = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    verdicts = [classify(a) for a in arrays]
    colours = sum(v.foreground == fg and v.background == bg for v, (fg, _, bg) in zip(verdicts, combinations))
    shapes = sum(v.shape == shape for v, (_, shape, _) in zip(verdicts, combinations))
    return colours / len(verdicts), shapes / len(verdicts)


@torch.no_grad()
def measure(seeds: int) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    sd = StableDiffusion.demo()
    combinations = [c for c in HELD_OUT for _ in range(seeds)]
    prompts = [caption(*c) for c in combinations]
    # One batch: image i gets FIRST_SEED + i, the same x_T in every run.
    start = time.perf_counter()
    reference, _ = run(sd, prompts, FIRST_SEED, "ddim", False, REFERENCE_STEPS)
    print(f"DDIM {REFERENCE_STEPS} steps: {time.perf_counter() - start:.0f} s", flush=True)
    results = {"reference": {"sampler": "ddim", "steps": REFERENCE_STEPS,
                             "accuracy": accuracy(sd, reference, combinations)}, "runs": []}
    for sampler, karras in configurations():
        for steps in STEPS:
            latent, calls = run(sd, prompts, FIRST_SEED, sampler, karras, steps)
            distance = ((latent - reference).norm() / reference.norm()).item()
            colours, shapes = accuracy(sd, latent, combinations)
            results["runs"].append(dict(sampler=sampler, karras=karras, steps=steps, unet_calls=calls,
                                        distance=distance, colours=colours, shapes=shapes))
            print(f"{sampler:<13} {'karras' if karras else 'default':<8} {steps:>3} steps {calls:>4} calls  "
                  f"distance {distance:.4f}  colours {colours:.0%}  shapes {shapes:.0%}", flush=True)
    results["images"] = len(prompts)
    results["torch"] = torch.__version__
    return results


def render(path: Path) -> None:
    """The Markdown table (stdout) and the plot (beside the JSON, .png) of a measurement."""
    results = json.loads(path.read_text())
    runs = results["runs"]
    target = next(r["distance"] for r in runs if r["sampler"] == "ddim" and r["steps"] == 50)
    print(f"DDIM-50's distance to DDIM-{REFERENCE_STEPS}: {target:.4f}\n")
    print("| sampler | distance at 5 / 10 / 20 / 30 / 50 steps | UNet calls to reach DDIM-50's distance | "
          "colours right, shapes right at 20 steps |")
    print("| --- | --- | --- | --- |")
    label = {}
    for sampler, karras in configurations():
        mine = [r for r in runs if r["sampler"] == sampler and r["karras"] == karras]
        name = f"`{sampler}`" + (" Karras" if karras else "")
        label[(sampler, karras)] = name.strip("`").replace("` ", " ")
        reached = next((r["unet_calls"] for r in sorted(mine, key=lambda r: r["unet_calls"])
                        if r["distance"] <= target), None)
        at20 = next(r for r in mine if r["steps"] == 20)
        distances = " / ".join(f"{r['distance']:.3f}" for r in mine)
        print(f"| {name} | {distances} | {reached if reached is not None else 'not within 50 steps'} | "
              f"{at20['colours']:.0%}, {at20['shapes']:.0%} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5), dpi=80)
    colours = dict(zip(SAMPLERS, plt.cm.tab20.colors))  # one colour per sampler; Karras dashed
    for (sampler, karras), name in label.items():
        mine = [r for r in runs if r["sampler"] == sampler and r["karras"] == karras]
        axis.plot([r["unet_calls"] for r in mine], [r["distance"] for r in mine], marker="o", markersize=3,
                  linestyle="--" if karras else "-", color=colours[sampler], label=name)
    axis.axhline(target, color="grey", linewidth=0.8)
    axis.set(xscale="log", yscale="log", xlabel="UNet calls (guided)",
             ylabel=f"distance to DDIM-{REFERENCE_STEPS} (relative)",
             title="Demo model, 17 held-out captions: quality per UNet call (grey: DDIM-50)")
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path.with_suffix(".png"))
    from PIL import Image  # a 64-colour palette: a quarter of the bytes, the same picture

    Image.open(path.with_suffix(".png")).convert("RGB").quantize(64).save(path.with_suffix(".png"), optimize=True)
    print(f"\nwrote {path.with_suffix('.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2, help="images per caption")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sampler-quality.json")
    parser.add_argument("--render", type=Path, help="render a measurement instead of measuring")
    args = parser.parse_args()
    if args.render:
        render(args.render)
        return
    args.out.write_text(json.dumps(measure(args.seeds), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
