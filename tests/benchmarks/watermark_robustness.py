"""Benchmark: what the invisible watermark (ldm/watermark.py, bit for bit invisible-watermark 0.2.0's
dwtDct) survives, for docs/watermark.md.

    python tests/benchmarks/watermark_robustness.py [--count 20] [--package]

Images, --count of each kind at 512x512 (seeded): "noise" (uniform RGB noise), "texture" (noise
with a 1/f amplitude spectrum, the falloff of natural photographs, per channel), "gradient" (a
smooth colour ramp, a random direction), "flat" (one random colour). Each is marked with the v1
scripts' 17 bytes (b"StableDiffusionV1", 136 bits) and the v2 scripts' 4 (b"SDV2", 32 bits), put
through one change, and read back; a cell is "exact reads / images (mean share of bits right)".

Changes: none (the marked pixels as written), PNG round trip, JPEG quality 90 and 75 (Pillow,
4:2:0 chroma subsampling, its default), a 0.5x resize (Lanczos; read at 256x256), a resize to
0.5x and back to 512 (Lanczos), a crop of the right and bottom 64 pixels (the blocks keep their
place) and a crop of the left and top 8 pixels (every block moves by one).

Then the demo model's own images (--count of them, 256x256, 20 DDIM steps, its shapes prompts),
marked untouched: how many read back.

--package: also read every changed image with invisible-watermark itself (in a subprocess, the
reference harness) and check that it reads the same bytes as ours (the table is then the
package's too).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ldm import watermark as W  # noqa: E402

SIZE = 512
MARKS = (b"StableDiffusionV1", b"SDV2")


def make_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE RGB uint8 image of `kind`."""
    if kind == "noise":
        return rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    if kind == "texture":  # 1/f amplitude, random phases, scaled to a standard deviation of 48 around 128
        frequencies = np.hypot(*np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE)))
        amplitude = 1 / np.maximum(frequencies, 1 / SIZE)
        planes = []
        for _ in range(3):
            spectrum = amplitude * np.exp(2j * np.pi * rng.random((SIZE, SIZE)))
            plane = np.fft.ifft2(spectrum).real
            planes.append(128 + 48 * (plane - plane.mean()) / plane.std())
        return np.clip(np.stack(planes, axis=-1), 0, 255).round().astype(np.uint8)
    if kind == "gradient":
        angle, start, end = rng.random() * 2 * np.pi, rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        rows, cols = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
        ramp = (np.cos(angle) * cols + np.sin(angle) * rows)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        return (start + ramp[..., None] * (end - start)).round().astype(np.uint8)
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (SIZE, SIZE, 3)).copy()
    raise ValueError(kind)


def encoded(image: Image.Image, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


CHANGES = {
    "none": lambda image: image,
    "PNG": lambda image: encoded(image, format="PNG"),
    "JPEG 90": lambda image: encoded(image, format="JPEG", quality=90),
    "JPEG 75": lambda image: encoded(image, format="JPEG", quality=75),
    "0.5x": lambda image: image.resize((SIZE // 2, SIZE // 2), Image.LANCZOS),
    "0.5x and back": lambda image: image.resize((SIZE // 2, SIZE // 2), Image.LANCZOS).resize((SIZE, SIZE),
                                                                                              Image.LANCZOS),
    "crop right/bottom 64": lambda image: image.crop((0, 0, SIZE - 64, SIZE - 64)),
    "crop left/top 8": lambda image: image.crop((8, 8, SIZE, SIZE)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="images of each kind")
    parser.add_argument("--package", action="store_true", help="check the reads against invisible-watermark")
    args = parser.parse_args()
    kinds = ("noise", "texture", "gradient", "flat")
    rng = np.random.default_rng(0)
    images = {kind: [make_image(kind, rng) for _ in range(args.count)] for kind in kinds}
    for mark in MARKS:
        bits = np.unpackbits(np.frombuffer(mark, np.uint8))
        print(f"\n{mark.decode()} ({len(bits)} bits), {args.count} images of each kind, {SIZE}x{SIZE}\n")
        print("| change | " + " | ".join(kinds) + " |")
        print("|---|" + "---|" * len(kinds))
        for change_name, change in CHANGES.items():
            cells, changed_all = [], {}
            for kind in kinds:
                exact, right = 0, []
                for i, image in enumerate(images[kind]):
                    changed = np.asarray(change(Image.fromarray(W.encode(image, mark))))
                    changed_all[f"{kind}{i}"] = changed
                    read = np.unpackbits(np.frombuffer(W.decode(changed, len(mark)), np.uint8))
                    exact += bool((read == bits).all())
                    right.append((read == bits).mean())
                cells.append(f"{exact}/{len(images[kind])} ({np.mean(right):.0%})")
            print(f"| {change_name} | " + " | ".join(cells) + " |", flush=True)
            if args.package:
                check_against_package(changed_all, len(mark))
    demo_read_back(args.count)


def demo_read_back(count: int) -> None:
    """The demo model's 256x256 images, each marked with each mark, read back untouched."""
    from ldm import StableDiffusion

    sd = StableDiffusion.demo()
    prompts = ["a red circle on a blue background", "a green square on a white background",
               "a yellow triangle on a black background", "a blue star on a yellow background"]
    images = [image for i in range(count)
              for image in sd.txt2img(prompts[i % len(prompts)], steps=20, height=256, width=256, seed=i,
                                      progress=False)]
    for mark in MARKS:
        read = sum(W.decode(W.encode(np.asarray(image), mark), len(mark)) == mark for image in images)
        print(f"\ndemo model, 256x256, {mark.decode()}: {read}/{len(images)} read back untouched")


def check_against_package(images: dict[str, np.ndarray], length: int) -> None:
    from tests.reference.original_watermark import run_package

    read = run_package(images, length=length)
    different = [name for name, image in images.items() if bytes(read[name]) != W.decode(image, length)]
    if different:
        raise SystemExit(f"invisible-watermark reads other bytes than ours from {different}")


if __name__ == "__main__":
    main()
