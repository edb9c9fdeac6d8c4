"""Bad input and interruptions on the command line, through a real `python -m ldm` subprocess:
one line naming the flag, exit 2 for a bad flag (before the model loads), 1 for a failure during
the run, 130 for Ctrl-C; never a traceback, and nothing written that is not complete."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.ldm_command import run_ldm

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--ddim_steps", "2", "--n_iter", "1", "--n_samples", "1", "--no-progress"]


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m ldm args...` (args may be bytes: argv is bytes on POSIX)."""
    return run_ldm(*(os.fsdecode(a) for a in args), cwd=cwd, env=env, timeout=timeout, text=False)


def patched_run(patch: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in a subprocess whose Python first runs `patch` (to fake a full disk)."""
    return run_ldm(*args, cwd=cwd, timeout=300, text=False, patch=patch)


def one_error_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    # The command's own lines, its warnings aside (a 64x64 run warns that it puts no watermark).
    lines = [line for line in stderr.splitlines() if line.startswith("python -m ldm") and ": warning: " not in line]
    assert len(lines) == 1, stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_an_outdir_that_is_a_file_or_cannot_be_written_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "taken").write_text("a file")
    one_error_line(run("txt2img", "--outdir", "taken", *FAST, cwd=tmp_path), 2,
                   "--outdir taken: a file is in the way (taken)")
    one_error_line(run("txt2img", "--outdir", "taken/deeper", *FAST, cwd=tmp_path), 2,
                   "--outdir taken/deeper: a file is in the way (taken)")
    # sysfs refuses new folders to everyone, root included (a chmod 0555 folder does not stop root)
    one_error_line(run("txt2img", "--outdir", "/sys/ldm-outdir", *FAST, cwd=tmp_path), 2,
                   "--outdir /sys/ldm-outdir: cannot write there")


def test_a_disk_too_small_for_the_run_is_refused_before_the_model_loads(tmp_path):
    patch = ("import shutil, collections\nUsage = collections.namedtuple('Usage', 'total used free')\n"
             "shutil.disk_usage = lambda path: Usage(10**9, 10**9 - 1000, 1000)")
    result = patched_run(patch, "txt2img", "--outdir", "out", *FAST, cwd=tmp_path)
    one_error_line(result, 2, "--outdir out: 0.0 MiB free", "(3 PNGs)")  # the sample, its copy for the grid, the grid
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # checked without leaving a folder behind


def test_a_disk_that_fills_up_mid_run_keeps_the_images_written_and_says_how_many(tmp_path):
    # Each image is two files (its sample, and its unmarked copy for the grid): the fifth fails.
    patch = ("import errno, ldm.outputs as outputs\nwrite, calls = outputs.written_then_linked, []\n"
             "def full(*args, **kwargs):\n    calls.append(1)\n"
             "    if len(calls) > 4:\n        raise OSError(errno.ENOSPC, 'No space left on device')\n"
             "    return write(*args, **kwargs)\noutputs.written_then_linked = full")
    args = ["txt2img", "--outdir", "out", "--ddim_steps", "2", "--n_iter", "4", "--n_samples", "1", "--no-progress"]
    result = patched_run(patch, *args, cwd=tmp_path)
    one_error_line(result, 1, "No space left on device", "2 image(s) written before it stay in out/samples")
    assert sorted(p.name for p in (tmp_path / "out" / "samples").iterdir()) == ["00000.png", "00001.png"]


@pytest.mark.parametrize("args, words", [
    (["--config", "missing.yaml"], ["--config missing.yaml: no such file"]),
    (["--device", "tpu"], ["--device tpu: not a device torch knows"]),
    (["--device", "cuda:7"], ["--device cuda:7: this torch", "use --device cpu"]),
    (["--threads", "0"], ["--threads 0: must be >= 1"]),
    (["--bf16", "--dtype", "float32"], ["--bf16 and --dtype float32 disagree"]),
    (["--offload", "--device", "cpu"], ["--offload moves each network to an accelerator only while it runs; give "
                                        "--device cuda or mps"]),
    (["--from-file", "latin1.txt"], ["--from-file latin1.txt: not UTF-8 text (byte 0xe9 at offset 3)"]),
    (["--from-file", "."], ["--from-file .: not a regular file"]),
], ids=["missing-config", "tpu", "cuda", "threads", "bf16-and-float32", "offload-on-cpu", "latin1-prompts",
        "folder-prompts"])
def test_bad_model_and_input_flags_get_one_line(tmp_path, args, words):
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    one_error_line(run("txt2img", *args, *FAST, cwd=tmp_path), 2, *words)
    assert not (tmp_path / "outputs").exists()


def test_a_prompt_that_is_not_utf8_is_refused_before_anything_runs(tmp_path):
    """Before: the images were generated, then writing the PNG's text chunk failed (a traceback)."""
    result = run("txt2img", b"--prompt", b"caf\xe9", "--outdir", "out", *FAST, cwd=tmp_path)
    one_error_line(result, 2, "--prompt: not valid UTF-8 (byte 0xe9 at character 3)")
    assert not (tmp_path / "out").exists()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("name, data, words", [
    ("bomb.png", png(30000, 30000, zlib.compress(b"\0" * 1000)), ["DecompressionBombError"]),
    ("corrupt.png", png(64, 64, b"\x78\x9c" + bytes(range(256)) * 4), ["broken data stream"]),
], ids=["decompression-bomb", "corrupt-idat"])
def test_an_init_image_that_cannot_be_decoded_is_refused_before_the_model_loads(tmp_path, name, data, words):
    """Both pass Image.verify() (the CRCs are right): the bomb's 900 M pixels are refused by PIL's
    limit, the corrupt pixel data fails when decoded; both now before the model loads."""
    (tmp_path / name).write_bytes(data)
    result = run("img2img", "--init-img", name, *FAST, cwd=tmp_path)
    one_error_line(result, 2, f"--init-img {name}:", *words)


def test_an_init_image_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    result = run("img2img", "--init-img", "pipe.png", *FAST, cwd=tmp_path, timeout=120)
    one_error_line(result, 2, "--init-img pipe.png: not a regular file")


def test_an_unknown_flag_is_reported_by_the_commands_parser_with_the_closest_flag(tmp_path):
    result = run("txt2img", "--promt", "a cat", cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith("usage: python -m ldm txt2img")
    assert stderr.splitlines()[-1] == ("python -m ldm txt2img: error: unrecognized arguments: --promt a cat; "
                                       "did you mean --prompt?")


@pytest.mark.parametrize("command", ["txt2img", "img2img", "convert", "bench", "train-demo"])
def test_every_command_takes_threads(tmp_path, command):
    result = run(command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--threads" in result.stdout.decode()


def test_threads_sets_torchs_threads_and_omp_num_threads_is_honoured(tmp_path):
    """bench reports the threads it ran with: --threads wins, OMP_NUM_THREADS is the default."""
    args = ["bench", "--ddim_steps", "1"]
    assert "3 CPU threads" in run(*args, "--threads", "3", cwd=tmp_path).stdout.decode()
    assert "1 CPU threads" in run(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}).stdout.decode()


def test_ctrl_c_stops_with_one_line_saying_how_many_images_were_written(tmp_path):
    """SIGINT after the first image: exit 130, "interrupted after N image(s)" with N the PNGs on
    the disk, no traceback, no half-written file, nothing about the model file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ldm", "txt2img", "--outdir", "out", "--ddim_steps", "20",
                                "--n_iter", "50", "--n_samples", "1", "--no-progress"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               # as in a terminal: a job started in the background by a shell
                               # (CI under nohup ... &) inherits SIGINT ignored, and Python keeps it so
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    samples, deadline = tmp_path / "out" / "samples", time.monotonic() + 300
    while not (samples.is_dir() and any(p.suffix == ".png" and p.name[0] != "." for p in samples.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    written = sorted(p.name for p in samples.iterdir())
    line = one_error_line(subprocess.CompletedProcess([], process.returncode, b"", stderr), 130)
    assert line == f"python -m ldm txt2img: interrupted after {len(written)} image(s)"
    assert written and all(name.endswith(".png") and not name.startswith(".") for name in written)
    assert not list((tmp_path / "out").glob("grid-*"))


def test_a_diffusers_folder_is_taken_by_ckpt(tiny_sd, tmp_path):
    """Before: "no such checkpoint file". The PNG says which model (no file hash for a folder)."""
    tiny_sd.save_diffusers(tmp_path / "tiny-diffusers")
    result = run("txt2img", "--ckpt", "tiny-diffusers", "--outdir", "out", "--skip_grid", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    with Image.open(tmp_path / "out" / "samples" / "00000.png") as image:
        parameters = image.text["parameters"]
    assert "Model: tiny-diffusers" in parameters and "Model hash" not in parameters and "Seed: 42" in parameters
    one_error_line(run("txt2img", "--ckpt", ".", *FAST, cwd=tmp_path), 2, "--ckpt .: a folder without model_index.json")


def test_a_foreign_package_of_the_same_name_is_named_at_start_up(tmp_path):
    """`tokenizer` is also a PyPI package: when another one wins the import, say so, at once."""
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "__init__.py").write_text("raise ImportError('the other tokenizer')\n")
    def started(cwd: Path) -> subprocess.CompletedProcess:  # the real start, not tests/ldm_command.py's fork
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "ldm", "--version"], cwd=cwd, env=env, capture_output=True)

    line = one_error_line(started(tmp_path), 2, "'tokenizer' resolves to", str(tmp_path / "tokenizer" / "__init__.py"))
    assert "virtual environment of its own" in line
    assert started(ROOT).returncode == 0


def test_a_checkpoint_with_a_missing_key_is_one_readable_line(tiny_checkpoint, tmp_path):
    """A KeyError's str() is the repr of its message: the line came out in quotes, with every
    backslash doubled. Now the message itself, its keys quoted once."""
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_checkpoint)
    del state["first_stage_model.decoder.conv_out.bias"]
    save_file(state, tmp_path / "missing.safetensors")
    line = one_error_line(run("txt2img", "--ckpt", "missing.safetensors", *FAST, cwd=tmp_path), 2,
                          "missing 1 key(s): 'first_stage_model.decoder.conv_out.bias'")
    assert line.startswith("python -m ldm txt2img: error: --ckpt missing.safetensors: missing.safetensors: does not")
