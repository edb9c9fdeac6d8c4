"""One job on several processes with torchrun (gloo on the CPU), and --resume (ldm/cli/job.py,
ldm/distributed.py, ldm/manifest.py), run for real in subprocesses on the bundled demo model.

The reference is the same command in one process with --threads 1: torchrun gives each of its
workers OMP_NUM_THREADS=1, and torch's CPU kernels split their sums by the number of threads, so
one process on two threads makes other bytes (measured: every sample differs); with one thread
each, the bytes are the same whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [f"a {colour} {shape} on a {ground} background" for colour, shape, ground in [
    ("red", "circle", "blue"), ("green", "square", "white"), ("yellow", "triangle", "black"),
    ("blue", "square", "yellow"), ("white", "circle", "red"), ("black", "triangle", "green"),
    ("magenta", "circle", "cyan"), ("cyan", "square", "magenta"), ("red", "triangle", "white"),
    ("green", "circle", "black"), ("blue", "triangle", "white"), ("yellow", "square", "blue")]]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow  # several runs of two or three processes


def job(prompts: list[str], folder: Path, *flags: str, steps: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return ["txt2img", "--from-file", str(folder / "prompts.txt"), "--n_iter", "1", "--ddim_steps", str(steps),
            "--seed", "5", *flags]


def one_process(args: list[str], outdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldm", *args, "--outdir", str(outdir), "--threads", "1",
                           "--no-progress"], env=ENV, capture_output=True, text=True, timeout=600)


def torchrun(processes: int, args: list[str], outdir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "ldm", *args, "--outdir", str(outdir)]


def run_torchrun(processes: int, args: list[str], outdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(processes, args, outdir), env=ENV, capture_output=True, text=True, timeout=600)


def files(outdir: Path) -> dict[str, bytes]:
    """Every file under outdir but the manifest (its lines say which process wrote each image)."""
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob("*"))
            if p.is_file() and not p.name.startswith("manifest-")}


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_manifest(outdir: Path, name: str, base: int, count: int) -> list[dict]:
    """A finished manifest: the run's line, each image once with its file's sha256, the end."""
    lines = manifest_lines(outdir / name)
    assert lines[0]["job"]["base"] == base and lines[0]["job"]["images"] == count
    images = sorted((line for line in lines[1:-1]), key=lambda line: line["index"])
    assert [line["index"] for line in images] == list(range(count))  # each once: no gap, no duplicate
    for line in images:
        assert line["file"] == f"samples/{base + line['index']:05d}.png"
        assert hashlib.sha256((outdir / line["file"]).read_bytes()).hexdigest() == line["sha256"]
        assert line["seed"] == 5 + line["index"] and line["steps"] == 4 and line["size"] == "64x64"
    assert lines[-1] == {"finished": {"images": count, "grid": "grid-0000.png"}}
    return images


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The twelve prompts, two per batch, in one process."""
    folder = tmp_path_factory.mktemp("one")
    result = one_process(job(PROMPTS, folder, "--n_samples", "2"), folder / "out")
    assert result.returncode == 0, result.stderr
    made = files(folder / "out")
    assert len([name for name in made if name.startswith("samples/")]) == 12
    return folder, made


def test_two_processes_write_the_bytes_of_one_and_a_complete_manifest(reference, tmp_path):
    _, expected = reference
    result = run_torchrun(2, job(PROMPTS, tmp_path, "--n_samples", "2"), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert files(tmp_path / "out") == expected  # the 12 samples and the grid, byte for byte
    images = check_manifest(tmp_path / "out", "manifest-00000.jsonl", 0, 12)
    assert {line["rank"] for line in images} == {0, 1}  # both processes made images
    assert "2 processes: 100%" in result.stderr and "12/12" in result.stderr  # one bar, on the main process
    assert result.stdout.count("grid-0000.png") == 1  # one grid, made once


def test_three_processes_on_seven_prompts_after_earlier_samples(tmp_path):
    """Batches of 2, 2, 2 and 1 among three processes; the folder holds two earlier samples, so
    this run's numbers start at 00002 on every process, as in one process."""
    runs = {}
    for processes in (1, 3):
        outdir = tmp_path / str(processes) / "out"
        (outdir / "samples").mkdir(parents=True)
        for number in (0, 1):
            (outdir / "samples" / f"{number:05d}.png").write_bytes(b"an earlier sample")
        args = job(PROMPTS[:7], tmp_path / str(processes), "--n_samples", "2")
        result = one_process(args, outdir) if processes == 1 else run_torchrun(processes, args, outdir)
        assert result.returncode == 0, result.stderr
        runs[processes] = files(outdir)
        images = check_manifest(outdir, "manifest-00002.jsonl", 2, 7)
    assert sorted(runs[3]) == ["grid-0000.png"] + [f"samples/{n:05d}.png" for n in range(9)]  # 2 earlier, 7 new
    assert runs[3] == runs[1]
    assert {line["rank"] for line in images} == {0, 1, 2}


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's workers (its children, told apart by RANK in their environment)."""
    pids = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{launcher.pid}\n" in status.read_text():
                environ = (status.parent / "environ").read_bytes().split(b"\0")
                rank = next(int(v[5:]) for v in environ if v.startswith(b"RANK="))
                pids[rank] = int(status.parent.name)
        except (OSError, StopIteration):
            continue
    return pids


def killed_midway(command: list[str], manifest: Path, rank: int | None, after: int) -> int:
    """Start `command` and SIGKILL it (rank None) or torchrun's worker `rank` once the manifest has
    `after` image lines by that process; -> how many it had. The run must then have failed."""
    launcher = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_after, deadline = None, time.monotonic() + 300
    while killed_after is None and time.monotonic() < deadline and launcher.poll() is None:
        lines = manifest_lines(manifest)[1:] if manifest.exists() else []
        by_it = [line for line in lines if "index" in line and rank in (None, line["rank"])]
        if len(by_it) >= after:
            os.kill(launcher.pid if rank is None else worker_pids(launcher)[rank], signal.SIGKILL)
            killed_after = len(by_it)
        time.sleep(0.05)
    _, stderr = launcher.communicate(timeout=300)
    assert killed_after is not None, f"the run ended before {after} images were written:\n{stderr[-3000:]}"
    assert launcher.returncode != 0
    assert "finished" not in manifest.read_text()
    return killed_after


def test_a_killed_process_then_resume_gives_the_uninterrupted_run(reference, tmp_path):
    _, expected = reference
    args, outdir = job(PROMPTS, tmp_path, "--n_samples", "2"), tmp_path / "out"
    manifest = outdir / "manifest-00000.jsonl"
    killed_after = killed_midway(torchrun(2, args, outdir), manifest, rank=1, after=2)
    recorded = [line["index"] for line in manifest_lines(manifest)[1:]]
    print(f"rank 1 killed after {killed_after} recorded images; {len(recorded)} of 12 recorded")
    assert len(recorded) < 12

    result = run_torchrun(2, args + ["--resume"], outdir)
    assert result.returncode == 0, result.stderr
    assert files(outdir) == expected  # nothing more, nothing less: no temporary file, no grid folder
    check_manifest(outdir, "manifest-00000.jsonl", 0, 12)

    again = run_torchrun(2, args + ["--resume"], outdir)
    assert again.returncode == 0, again.stderr
    assert "the run is finished, all 12 images are there; nothing to do" in again.stdout
    assert files(outdir) == expected


def test_resume_in_one_process_skips_a_torn_line_and_removes_a_killed_writers_file(reference, tmp_path):
    """One process killed after 4 images; then, constructed, what a kill in the middle of a write
    leaves: a torn manifest line and a temporary PNG. --resume makes the missing images (keeping a
    sample it finds without a line when it holds the same bytes), as the uninterrupted run."""
    _, expected = reference
    args, outdir = job(PROMPTS, tmp_path, "--n_samples", "2"), tmp_path / "out"
    manifest = outdir / "manifest-00000.jsonl"
    command = [sys.executable, "-m", "ldm", *args, "--outdir", str(outdir), "--threads", "1", "--no-progress"]
    killed_midway(command, manifest, rank=None, after=4)
    with manifest.open("a") as f:
        f.write('{"index": 11, "prompt": "a yel')
    (outdir / "samples" / ".00011.png.partial-0123456789ab").write_bytes(b"half a png")

    result = one_process(args + ["--resume"], outdir)
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout and ".00011.png.partial-0123456789ab" in result.stdout
    assert files(outdir) == expected
    check_manifest(outdir, "manifest-00000.jsonl", 0, 12)


def test_resume_refuses_other_flags_and_a_folder_without_a_run(reference, tmp_path):
    args, outdir = job(PROMPTS[:2], tmp_path, "--n_samples", "2"), tmp_path / "out"
    nothing = one_process(args + ["--resume"], outdir)
    assert nothing.returncode == 2
    assert "--resume: no run to resume in" in nothing.stderr and "Traceback" not in nothing.stderr
    assert one_process(args, outdir).returncode == 0
    manifest = outdir / "manifest-00000.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))  # not finished
    other = one_process(job(PROMPTS[:2], tmp_path, "--n_samples", "2", steps=5) + ["--resume"], outdir)
    assert other.returncode == 2
    assert "was made with other flags: --ddim_steps 4 there, 5 here" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    (tmp_path / "prompts.txt").write_text("another prompt\n")  # the same path, other prompts
    moved = one_process(args + ["--resume"], outdir)
    assert moved.returncode == 2
    assert f"--from-file {tmp_path / 'prompts.txt'}: not the file that run used" in moved.stderr


def test_noise_original_is_refused_with_resume(tmp_path):
    result = one_process(job(PROMPTS[:1], tmp_path, "--noise", "original", "--resume"), tmp_path / "out")
    assert result.returncode == 2
    assert "cannot be resumed or split across processes" in result.stderr


def test_a_second_run_in_the_folder_continues_the_numbers_and_has_its_own_manifest(tmp_path):
    args = job(PROMPTS[:3], tmp_path, "--n_samples", "3")
    for _ in range(2):
        assert one_process(args, tmp_path / "out").returncode == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["grid-0000.png", "grid-0001.png", "manifest-00000.jsonl", "manifest-00003.jsonl", "samples"]
    second = manifest_lines(tmp_path / "out" / "manifest-00003.jsonl")
    assert [line["file"] for line in second[1:-1]] == ["samples/00003.png", "samples/00004.png", "samples/00005.png"]
    assert second[-1] == {"finished": {"images": 3, "grid": "grid-0001.png"}}
    shutil.rmtree(tmp_path / "out")


def test_img2img_on_two_processes_writes_the_bytes_of_one(tmp_path):
    """Every generation command runs through the same job: img2img of one input, five prompts."""
    from PIL import Image

    Image.effect_noise((64, 64), 40).convert("RGB").save(tmp_path / "input.png")
    args = ["img2img", *job(PROMPTS[:5], tmp_path, "--n_samples", "2")[1:], "--init-img", str(tmp_path / "input.png"),
            "--strength", "0.6"]
    one = one_process(args, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = run_torchrun(2, args, tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert files(tmp_path / "two") == files(tmp_path / "one")
    images = check_manifest(tmp_path / "two", "manifest-00000.jsonl", 0, 5)
    assert {line["rank"] for line in images} == {0, 1}
