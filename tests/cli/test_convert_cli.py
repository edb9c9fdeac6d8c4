"""`python -m ldm convert`, run for real in a subprocess: .ckpt <-> .safetensors (the same tensors,
float16 with --half, the EMA weights kept, dropped or used), the bundled model by the word `demo`,
a diffusers folder and back, and the refusals (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from checkpoints_convert import layout
from checkpoints_convert.diffusers import component_configs, model_index
from checkpoints_convert.read import read_checkpoint
from ldm.config import V1
from ldm.demo import CHECKPOINT as DEMO_CHECKPOINT
from ldm.pipeline import StableDiffusion
from tests.ldm_command import run_ldm

ROOT = Path(__file__).resolve().parents[2]


def convert(*args: str, cwd: Path, command: str = "convert", preexec_fn=None) -> subprocess.CompletedProcess:
    return run_ldm(command, *args, cwd=cwd, preexec_fn=preexec_fn)


def converted(*args: str, cwd: Path) -> Path:
    result = convert(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / result.stdout.strip()


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same keys, each tensor of the same dtype and bit for bit the same values."""
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def same_weights(a: StableDiffusion, b: StableDiffusion) -> bool:
    state = b.state_dict()
    return all(torch.equal(v, state[k]) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def ema_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """tiny_checkpoint with EMA weights, as the original's training saved them: `model_ema.*` (LitEma's
    names, dots removed) beside the UNet, other values than the UNet's, plus the decay and the update
    count; as a .ckpt (torch zip pickle)."""
    tensors = read_checkpoint(tiny_checkpoint)
    unet_keys = [k for k in tensors if k.startswith(layout.UNET_PREFIX)]
    tensors |= {layout.ema_key(k): tensors[k] + 0.25 for k in unet_keys}
    tensors |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1234, dtype=torch.int)}
    path = tmp_path_factory.mktemp("ema") / "ema.ckpt"
    torch.save({"state_dict": tensors}, path)
    return path


def test_the_word_demo_converts_the_bundled_model_to_a_ckpt_and_back(tmp_path):
    """`demo` used to be read as a path ("input demo: no such file"), and an output named .ckpt
    became a diffusers FOLDER of that name."""
    source = read_checkpoint(DEMO_CHECKPOINT)
    ckpt = converted("demo", "demo.ckpt", cwd=tmp_path)
    assert ckpt.is_file() and ckpt.read_bytes()[:4] == b"PK\x03\x04"  # a torch zip, not a folder
    assert same_tensors(read_checkpoint(ckpt), source)
    back = converted("demo.ckpt", "demo.safetensors", cwd=tmp_path)
    assert same_tensors(read_checkpoint(back), source)
    loaded = StableDiffusion.from_checkpoint(back, device="cpu", dtype=torch.float32)
    assert loaded.variant == "demo" and same_weights(StableDiffusion.demo(device="cpu", dtype=torch.float32), loaded)

    # safetensors -> safetensors, `--to original` from a file (a traceback before): the training record kept.
    copy = converted("demo", "copy.safetensors", "--to", "original", cwd=tmp_path)
    with safe_open(DEMO_CHECKPOINT, "pt") as before, safe_open(copy, "pt") as after:
        assert after.metadata() == before.metadata() and "ldm_demo_training" in after.metadata()
    assert same_tensors(read_checkpoint(copy), source)


def test_a_ckpt_with_ema_weights_to_safetensors_keeps_drops_or_uses_them(ema_checkpoint, tmp_path):
    source = read_checkpoint(ema_checkpoint)
    ema_keys = {k for k in source if k.startswith("model_ema.")}
    assert len(ema_keys) > 2

    kept = read_checkpoint(converted(str(ema_checkpoint), "kept.safetensors", cwd=tmp_path))
    assert same_tensors(kept, source)  # every key, both sets of UNet weights, bit for bit

    half = read_checkpoint(converted(str(ema_checkpoint), "half.safetensors", "--half", cwd=tmp_path))
    weights = {k for k, v in source.items() if v.is_floating_point() and k not in layout.IGNORED_KEYS}
    assert weights >= ema_keys - {"model_ema.decay", "model_ema.num_updates"} and "betas" not in weights
    assert same_tensors(half, {k: v.half() if k in weights else v for k, v in source.items()})

    dropped = read_checkpoint(converted(str(ema_checkpoint), "dropped.ckpt", "--ema", "drop", cwd=tmp_path))
    assert same_tensors(dropped, {k: v for k, v in source.items() if k not in ema_keys})

    used = converted(str(ema_checkpoint), "ema-only.safetensors", "--ema", "use", "--half", cwd=tmp_path)
    ema_only = {k: v for k, v in source.items() if k not in ema_keys}
    ema_only |= {k: source[layout.ema_key(k)] for k in ema_only if k.startswith(layout.UNET_PREFIX)}
    assert same_tensors(read_checkpoint(used), {k: v.half() if k in weights else v for k, v in ema_only.items()})
    # And it loads as the model of the EMA weights (float16 values: loaded as float32, exactly).
    expected = StableDiffusion.from_checkpoint(ema_checkpoint, device="cpu", dtype=torch.float32, use_ema=True)
    loaded = StableDiffusion.from_checkpoint(used, device="cpu", dtype=torch.float32)
    assert same_weights(expected.half(), loaded.half())
    assert not same_weights(expected, StableDiffusion.from_checkpoint(ema_checkpoint, device="cpu",
                                                                      dtype=torch.float32))  # EMA != training


def test_the_demo_model_to_a_diffusers_folder_and_back(tmp_path):
    folder = converted("demo", "demo-diffusers", cwd=tmp_path)  # no extension: a folder
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
    back = converted("demo-diffusers", "back.safetensors", cwd=tmp_path)
    demo = StableDiffusion.demo(device="cpu", dtype=torch.float32)
    loaded = StableDiffusion.from_checkpoint(back, device="cpu", dtype=torch.float32)
    assert loaded.config == demo.config and same_weights(demo, loaded)


@pytest.mark.parametrize("args, message", [
    (["demo", "out.bin"], "the output out.bin has the unknown extension '.bin': name a .safetensors, .ckpt, .pt, "
                          ".pth file (an original single file) or a folder without an extension (diffusers), or say "
                          "which with --to"),
    (["demo", "out.ckpt", "--to", "diffusers"], "--to diffusers, but the output out.ckpt has the single-file "
                                                "extension '.ckpt': a diffusers pipeline is a folder"),
    (["demo", "no-such-folder/out.ckpt"], "no-such-folder/out.ckpt: the folder no-such-folder does not exist"),
    (["demo", "taken.safetensors"], "taken.safetensors exists; choose another name (files are never overwritten)"),
    (["demo", "out.ckpt", "--ema", "use"], "holds no EMA weights (no model_ema.* keys)"),
    (["pipeline", "copy"], "the input pipeline and the output copy are both diffusers folders: nothing to convert"),
])
def test_a_refused_conversion_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "taken.safetensors").write_bytes(b"mine")
    (tmp_path / "pipeline").mkdir()
    result = convert(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m ldm convert: error: "), result.stderr
    assert message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline", "taken.safetensors"]
    assert (tmp_path / "taken.safetensors").read_bytes() == b"mine" and not any((tmp_path / "pipeline").iterdir())


def test_a_hostile_folder_s_text_reaches_the_terminal_quoted(tmp_path):
    """A config value with an escape sequence and a newline: the one line shows its repr()."""
    hostile = "\x1b[31mred\nnext line"
    folder = tmp_path / "hostile"
    for component, values in component_configs(V1, torch.float32).items():
        values = values | {"cross_attention_dim": hostile} if component == "unet" else values
        (folder / component).mkdir(parents=True)
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        (folder / component / name).write_text(json.dumps(values))
    (folder / "model_index.json").write_text(json.dumps(model_index(V1)))
    result = convert("hostile", "out.safetensors", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "\x1b" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert f"cross_attention_dim={hostile!r} is no Stable Diffusion" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def a_full_disk() -> None:
    """In the child: files may not grow past 1 MiB, and the write that would fails with EFBIG (the
    signal that would kill the process is ignored), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.parametrize("command, args, written", [
    ("convert", ["demo", "out.safetensors"], "out.safetensors"),
    ("convert", ["demo", "out.ckpt"], "out.ckpt"),
    ("convert", ["demo", "out"], "out"),  # a diffusers folder
    ("train-demo", ["--out", "out.safetensors", "--autoencoder-steps", "1", "--denoiser-steps", "1",
                    "--batch-size", "1", "--threads", "1", "--no-progress"], "out.safetensors"),
])
def test_a_full_disk_exits_1_with_one_line_and_leaves_nothing(tmp_path, command, args, written):
    """The writers report it in their own types (safetensors' SafetensorError, torch's RuntimeError):
    it was a traceback, and a truncated file at the name, which then refused a retry."""
    result = convert(*args, cwd=tmp_path, command=command, preexec_fn=a_full_disk)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m ldm {command}: error: {written}: writing failed, "
                                                   "nothing was left behind ("), result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the name nor a temporary file or folder
