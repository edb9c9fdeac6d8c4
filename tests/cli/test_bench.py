"""`python -m ldm bench`: the stages' times, FLOPs, rates and peak RSS; `--against diffusers` in
ABBA order, a process per row; the FLOP count of each stage checked against what torch counts in
the real run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ldm.cli.bench_flops import counted, matmul_peak, stage_flops
from ldm.pipeline import StableDiffusion
from tests.cli.test_cli import ROOT, run

STAGES = ("load checkpoint", "text encoder", "txt2img to the latent (2 steps)", "VAE decode")
ROW = re.compile(r"^  (?P<label>.{20}) (?P<stage>.{36}) +(?P<time>[\d.]+) +(?P<gflop>[\d.]+|-) +(?P<rate>[\d.]+|-) +"
                 r"(?P<share>\d+%|-) +(?P<rss>[\d.]+)$")


def rows(out: str) -> list[dict]:
    return [{k: v.strip() for k, v in m.groupdict().items()} for line in out.splitlines() if (m := ROW.match(line))]


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_each_stage_counts_the_flops_torch_counts_in_the_real_run(guidance):
    """Counted on the meta device; the real runs counted with attention as its matmuls (the CPU's
    fused kernel is not counted by FlopCounterMode, which bench_flops.py says)."""
    torch.manual_seed(0)
    sd = StableDiffusion.demo()
    predicted = stage_flops(sd, 2, (16, 24), 3, guided=guidance != 1.0)
    prompts = ["a red circle on a blue background", "a green square"]
    with sdpa_kernel(SDPBackend.MATH):
        real = {"text encoder": counted(lambda: sd.text_encoder(sd.tokenizer(prompts))),
                "sampling": counted(lambda: sd.txt2img(prompts, steps=3, guidance_scale=guidance, height=64, width=96,
                                                       output="latent", progress=False)),
                "VAE decode": counted(lambda: sd.vae.decode(torch.randn(2, 4, 16, 24)))}
    assert real == predicted and min(real.values()) > 0


def test_the_matmul_peak_is_a_rate_this_machine_reaches():
    peak = matmul_peak(torch.float32)
    a, w = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ w.T
    start = time.perf_counter()
    a @ w.T
    one = 2 * 1024**3 / (time.perf_counter() - start) / 1e9
    assert one * 0.5 <= peak  # the best of several shapes, this one among them (timing noise aside)


def test_bench_times_every_stage_with_its_flops_rate_and_peak_rss(tiny_checkpoint, tmp_path):
    result = run("bench", "--ckpt", str(tiny_checkpoint), "--ddim_steps", "2", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("demo on cpu (torch.float32, ") and "CPU threads), batch 1, 64x64, guidance scale 7.5" in out
    table = rows(out)
    assert [r["stage"] for r in table] == list(STAGES) and table[0]["label"] == "ours"
    assert table[0]["gflop"] == "-" and all(float(r["gflop"]) > 0 and float(r["rate"]) > 0 for r in table[1:])
    assert all(0.1 < float(r["rss"]) < 8 for r in table)
    assert [float(r["rss"]) for r in table] == sorted(float(r["rss"]) for r in table)  # a peak never falls
    assert "sampling steps per second" in out
    assert run("bench", "--ckpt", "missing.ckpt", cwd=tmp_path).returncode == 2


@pytest.mark.slow  # four processes, each loading torch and a model
def test_against_diffusers_runs_each_row_in_its_own_process_in_abba_order(tiny_checkpoint, tmp_path):
    result = run("bench", "--ckpt", str(tiny_checkpoint), "--ddim_steps", "2", "--against", "diffusers",
                 "--modes", "fp32", "--rounds", "2", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("round ")]
    assert result.stderr.count("  stage times ") == 4
    assert progress == ["round 1/2: ours fp32 ...", "round 1/2: diffusers fp32 ...",
                        "round 2/2: diffusers fp32 ...", "round 2/2: ours fp32 ..."]
    out = result.stdout
    assert "1 CPU threads, batch 1, 64x64, 2 DDIM steps, guidance scale 7.5; 2 round(s) ABBA" in out
    table = rows(out)
    assert [(r["label"], r["stage"]) for r in table] == [(label if i == 0 else "", stage)
                                                        for label in ("ours fp32", "diffusers fp32")
                                                        for i, stage in enumerate(STAGES)]
    # the same work on both rows (our count), so the rates differ only by the times
    assert [r["gflop"] for r in table[:4]] == [r["gflop"] for r in table[4:]]
    ratio = re.search(r"fp32 +load checkpoint ([\d.]+)x, text encoder ([\d.]+)x, txt2img to the latent "
                      r"\(2 steps\) ([\d.]+)x, VAE decode ([\d.]+)x", out)
    assert ratio and all(float(x) > 0 for x in ratio.groups())
    assert not list(tmp_path.iterdir())  # the converted folder lived in a temporary folder, now gone


@pytest.mark.parametrize("args, words", [
    (["--against", "diffusers", "--bf16"], "--against diffusers runs the rows of --modes"),
    (["--against", "diffusers", "--modes", "fp64"], "--modes fp64: give distinct modes among fp32, fp16, bf16"),
    (["--against", "diffusers", "--modes", "fp32,fp32"], "--modes fp32,fp32: give distinct modes"),
    (["--against", "diffusers", "--rounds", "0"], "--rounds 0: must be >= 1"),
    (["--against", "diffusers", "--json", "taken.json"], "--json taken.json exists; choose another name"),
    (["--modes", "bf16"], "--modes, --rounds and --json are for the rows of --against diffusers"),
    (["--json", "out.json"], "--modes, --rounds and --json are for the rows of --against diffusers"),
    (["--against", "transformers"], "argument --against: invalid choice"),
    (["--against", "diffusers", "--json", "missing/out.json"], "--json missing/out.json: the folder missing does not"),
])
def test_bad_bench_flags_get_one_line(tmp_path, args, words):
    (tmp_path / "taken.json").write_text("{}")
    result = run("bench", "--ddim_steps", "1", *args, cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr.splitlines()[-1], result.stderr


def test_against_diffusers_without_diffusers_says_how_to_get_it(tmp_path):
    code = ("import importlib.util, sys; find = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda name, *a: None if name == 'diffusers' else find(name, *a); "
            "from ldm.cli import main; sys.exit(main(['bench', '--against', 'diffusers', '--ddim_steps', '1']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("python -m ldm bench: error: --against diffusers: diffusers is not "
                                              "installed (pip install diffusers; it is in this project's test extra)")


def test_a_cuda_run_adds_the_peak_gpu_memory_column_and_a_cpu_run_does_not():
    """A constructed case (no GPU here): bench_run.Stages records peak_vram_gib on CUDA only."""
    from ldm.cli.bench import table

    stages = [{"stage": "load checkpoint", "seconds": 1.0, "peak_rss_gib": 2.0, "peak_vram_gib": 3.5},
              {"stage": "VAE decode", "seconds": 2.0, "peak_rss_gib": 2.25, "peak_vram_gib": 4.0}]
    cuda = table([("ours fp16", [{"stages": stages, "flops": {"VAE decode": 4e9}}], 100.0)])
    assert cuda.splitlines()[0].endswith("peak RSS GiB peak VRAM GiB")
    assert cuda.splitlines()[2].endswith("2%         2.25          4.00")
    cpu = table([("ours fp32", [{"stages": [{k: v for k, v in s.items() if k != "peak_vram_gib"} for s in stages],
                                 "flops": {}}], 100.0)])
    assert "VRAM" not in cpu and cpu.splitlines()[2].endswith("-        -        -         2.25")


def test_a_row_reports_its_own_peak_not_its_parents():
    """A parent holding 1 GiB starts a row's process: ru_maxrss there would say at least 1 GiB (Linux
    keeps the high-water mark across fork and exec); the row's own peak is far below."""
    parent = torch.ones(2**28)  # 1 GiB, touched
    code = "from ldm.cli.bench_run import peak_rss_gib; print(peak_rss_gib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.sum() == 2**28 and float(child.stdout) < 0.9
