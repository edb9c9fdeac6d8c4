"""The bundled demo model, sampled through the command line at its defaults and judged by pixels.

What is at the CLI's defaults here: the checkpoint (none given: the bundled one), the size (the
model's 64x64), the sampler (DDIM), 50 steps, eta 0, guidance scale 7.5, seed 42 (image i: 42 + i).
Only the batch is set: 2 images per caption (--n_samples 2), one iteration, no grid.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from checkpoints_convert.layout import is_ignored
from checkpoints_convert.load import read_original
from ldm.demo import CHECKPOINT
from ldm.demo.shapes import TRAINING, caption
from ldm.pipeline import StableDiffusion
from tests.ldm_command import run_ldm

from .pixel_classifier import Verdict, classify

ROOT = Path(__file__).resolve().parents[3]
# 17 training combinations, spread over the list (every 9th), against the 17 held-out ones.
TRAINING_SAMPLE = TRAINING[::9]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = run_ldm(*args, cwd=cwd, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


def sample_captions(combinations, folder: Path) -> list[tuple[str, Path]]:
    """Every caption twice in a --from-file list, batches of 2: one CLI run. -> (caption, png) pairs."""
    prompts = folder / "prompts.txt"
    prompts.write_text("".join(f"{caption(*c)}\n" * 2 for c in combinations))
    done = cli("txt2img", "--from-file", str(prompts), "--n_samples", "2", "--n_iter", "1", "--skip_grid",
               "--outdir", "out", "--no-progress", cwd=folder)
    paths = [Path(folder, line) if not Path(line).is_absolute() else Path(line)
             for line in done.stdout.split() if line.endswith(".png")]
    assert len(paths) == 2 * len(combinations)
    pairs = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (64, 64)
            pairs.append((image.text["parameters"].splitlines()[0], path))
    return pairs


def judged(text: str, image: np.ndarray) -> tuple[Verdict, bool, bool]:
    """The classifier's verdict on an image of caption `text`: (verdict, both colours right, shape right)."""
    _, fg, shape, _, _, bg, _ = text.split()
    verdict = classify(image)
    return verdict, verdict.foreground == fg and verdict.background == bg, verdict.shape == shape


def judge(pairs: list[tuple[str, Path]], title: str) -> tuple[float, float]:
    colours_right = shape_right = 0
    mistakes = Counter()
    for text, path in pairs:
        verdict, both, shape_ok = judged(text, np.asarray(Image.open(path).convert("RGB")))
        colours_right += both
        shape_right += shape_ok
        if not both or not shape_ok:
            mistakes[f"{text} -> {verdict.foreground} {verdict.shape} on {verdict.background}"] += 1
    n = len(pairs)
    print(f"\n{title}: {n} images; both colours right {colours_right}/{n} = {colours_right / n:.0%}, "
          f"shape right {shape_right}/{n} = {shape_right / n:.0%}")
    for mistake, count in mistakes.most_common():
        print(f"  {count} x {mistake}")
    return colours_right / n, shape_right / n


@pytest.mark.slow  # the main job twice: twelve samples through the command line
def test_the_main_job_writes_six_samples_and_a_grid_with_the_same_bytes_for_the_same_seed(tmp_path):
    """README line 1: no --ckpt, 3 samples x 2 iterations, 50 DDIM steps; twice, into two folders."""
    runs = []
    for folder in ("first", "second"):
        cli("txt2img", "--prompt", "a red circle on a blue background", "--outdir", folder, "--no-progress",
            cwd=tmp_path)
        runs.append(sorted((tmp_path / folder / "samples").iterdir()))
        assert (tmp_path / folder / "grid-0000.png").stat().st_size > 0
    assert [p.name for p in runs[0]] == [f"{i:05d}.png" for i in range(6)]
    for a, b in zip(*runs):
        assert a.read_bytes() == b.read_bytes(), f"{a.name}: same seed, different bytes"
    pixels = [np.asarray(Image.open(p)) for p in runs[0]]
    assert all(p.shape == (64, 64, 3) for p in pixels)
    # image i has seed 42 + i: different seeds give different images
    for i in range(len(pixels)):
        for j in range(i + 1, len(pixels)):
            assert np.abs(pixels[i].astype(int) - pixels[j].astype(int)).mean() > 1.0, (i, j)
    other = cli("txt2img", "--prompt", "a red circle on a blue background", "--outdir", "other", "--seed", "1000",
                "--n_samples", "1", "--n_iter", "1", "--skip_grid", "--no-progress", cwd=tmp_path)
    assert other.returncode == 0
    other_pixels = np.asarray(Image.open(tmp_path / "other" / "samples" / "00000.png"))
    assert np.abs(other_pixels.astype(int) - pixels[0].astype(int)).mean() > 1.0


def test_the_shipped_file_is_small_in_the_original_layout_and_loads_with_its_variant_detected():
    assert CHECKPOINT.is_file()
    assert CHECKPOINT.stat().st_size <= 25_000_000
    checkpoint = read_original(CHECKPOINT)  # variant=None
    assert checkpoint.config.name == "demo", checkpoint.reason
    assert "weights" in checkpoint.reason or "context" in checkpoint.reason, checkpoint.reason
    from safetensors import safe_open

    with safe_open(str(CHECKPOINT), "pt") as f:
        keys = list(f.keys())
        prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
        assert all(k.startswith(prefixes) or is_ignored(k) for k in keys), [k for k in keys if not k.startswith(prefixes)][:5]
        for prefix in prefixes:
            assert any(k.startswith(prefix) for k in keys), prefix
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype.is_floating_point
        # the latent scale measured after training travels in the file, as scale_by_std stores it
        assert abs(checkpoint.config.scale_factor - f.get_tensor("scale_factor").item()) < 1e-6
        assert "ldm_demo_training" in f.metadata()
    sd = StableDiffusion.demo(device="cpu")
    assert sd.variant == "demo" and sd.config.scale_factor == checkpoint.config.scale_factor
