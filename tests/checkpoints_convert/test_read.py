"""Reading checkpoint files safely: formats by magic bytes, and one clear error for every bad file."""

import os
import struct
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from checkpoints_convert.read import CheckpointError, detect_format, read_checkpoint

STATE = {"model.diffusion_model.conv.weight": torch.randn(3, 2), "first_stage_model.x": torch.arange(5)}


def assert_same_state(loaded, expected=STATE):
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value)


@pytest.mark.parametrize(
    "name, save, kind",
    [
        ("model.ckpt", lambda p: torch.save({"state_dict": STATE, "global_step": 7}, p), "zip"),
        ("model.ckpt", lambda p: torch.save({"state_dict": STATE}, p, _use_new_zipfile_serialization=False), "legacy-pickle"),
        ("model.safetensors", lambda p: save_file(STATE, p), "safetensors"),
        ("nested.ckpt", lambda p: torch.save({"state_dict": {"state_dict": STATE}}, p), "zip"),
        ("flat.pt", lambda p: torch.save(STATE, p), "zip"),
        # The extension lies: the format comes from the bytes.
        ("really_safetensors.ckpt", lambda p: save_file(STATE, p), "safetensors"),
        ("really_zip.safetensors", lambda p: torch.save({"state_dict": STATE}, p), "zip"),
    ],
)
def test_reads_every_format_by_magic_bytes(tmp_path, name, save, kind):
    path = tmp_path / name
    save(str(path))
    assert detect_format(path) == kind
    assert_same_state(read_checkpoint(path))


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickle_that_runs_a_shell_command_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": STATE, "payload": RunsAShellCommand(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "system" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


class SomeUnknownClass:
    pass


def test_an_unknown_global_is_refused_by_name(tmp_path):
    path = tmp_path / "unknown.ckpt"
    torch.save({"state_dict": STATE, "extra": SomeUnknownClass()}, path)
    with pytest.raises(CheckpointError, match="SomeUnknownClass"):
        read_checkpoint(path)


def test_the_lightning_callback_of_released_checkpoints_is_inert(tmp_path, monkeypatch):
    """sd-v1-x "full" checkpoints pickle PyTorch Lightning's ModelCheckpoint callback state. It is
    replaced by an inert stand-in (pytorch_lightning is never imported), and the weights load."""
    imported = []

    class ModelCheckpoint:
        def __setstate__(self, state):
            imported.append(state)

    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "full.ckpt"
    callback = ModelCheckpoint()
    callback.best = 0.5
    torch.save({"state_dict": STATE, "callbacks": {ModelCheckpoint: callback}}, path)
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.delitem(sys.modules, name)
    assert_same_state(read_checkpoint(path))
    assert imported == []


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def safetensors_bytes(tmp_path) -> bytes:
    save_file(STATE, tmp_path / "good.safetensors")
    return (tmp_path / "good.safetensors").read_bytes()


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda tmp: write_bytes(tmp / "empty.ckpt", b""), CheckpointError, ["empty"]),
        (lambda tmp: write_bytes(tmp / "notes.ckpt", b"these are my notes\n"), CheckpointError, ["not a checkpoint"]),
        (lambda tmp: write_bytes(tmp / "cut.safetensors", safetensors_bytes(tmp)[:-7]), CheckpointError, ["truncated"]),
        (lambda tmp: write_bytes(tmp / "lying.safetensors", struct.pack("<Q", 10**6) + safetensors_bytes(tmp)[8:]),
         CheckpointError, ["header claims 1000000 bytes"]),
        (lambda tmp: write_bytes(tmp / "cut.ckpt", (torch.save(STATE, tmp / "z.ckpt"), (tmp / "z.ckpt").read_bytes())[1][:200]),
         CheckpointError, ["broken zip"]),
        (lambda tmp: (tmp / "folder.ckpt").mkdir() or tmp / "folder.ckpt", IsADirectoryError, ["is a directory"]),
        (lambda tmp: tmp / "does-not-exist.ckpt", FileNotFoundError, ["no such checkpoint"]),
        (lambda tmp: write_bytes(tmp / "no_tensors.ckpt", (torch.save({"a": 1}, tmp / "n.ckpt"), (tmp / "n.ckpt").read_bytes())[1]),
         CheckpointError, ["holds no tensors"]),
    ],
    ids=["empty", "text", "truncated-safetensors", "lying-header", "truncated-zip", "directory", "missing", "no-tensors"],
)
def test_broken_files_give_one_clear_error_naming_the_file(tmp_path, make, error, words):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
