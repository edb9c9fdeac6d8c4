"""Read an original checkpoint file into a flat {name: tensor} dict, safely.

The format is told by the file's first bytes, never by its extension:
- `PK\\x03\\x04`: a zip archive, torch's format since 1.6 (`.ckpt`, `.pt`, `.pth`);
- `\\x80` + a protocol byte: a legacy torch pickle (before 1.6);
- an 8-byte little-endian header length, then a JSON header: safetensors.

Pickles can run arbitrary code when loaded. Before torch sees one, its opcodes are walked
(pickle_scan.py: only the globals, opcodes, nesting and tensor shapes a weights file needs) and
its container checked against what the pickle declares (torch_archive.py: every zip record
stored, every storage's size exact, every legacy storage filled). Then torch's restricted
unpickler (`torch.load(weights_only=True)`) builds it: tensors, storages, ordered dicts and plain
values; a short list of inert classes that the original training code pickled into its released
checkpoints is replaced by an empty stand-in, never imported.

Tensors come back memory-mapped from the file (zip and safetensors), so a 7 GB checkpoint costs
no memory for the keys nobody uses; the model COPIES the tensors it keeps
(`StableDiffusion.from_checkpoint`), so rewriting or truncating the file later never reaches a
loaded model.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import torch
from safetensors import safe_open

from .pickle_scan import INERT_CLASSES, BrokenFile, PickleRefused
from .torch_archive import check_legacy, check_zip

ZIP_MAGIC = b"PK\x03\x04"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and what is wrong."""


class _InertPickledObject:
    """Stands in for a class the original training code pickled (callbacks): holds, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


# Globals found in the officially released Stable Diffusion .ckpt files besides tensors: the
# PyTorch Lightning callback state saved by the training run (sd-v1-x "full" checkpoints).
INERT_GLOBALS = sorted(INERT_CLASSES)
MAX_STATE_DICT_NESTING = 3  # {"state_dict": {"state_dict": tensors}} is the deepest seen


def detect_format(path: Path) -> str:
    """'zip', 'legacy-pickle' or 'safetensors', from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "legacy-pickle"
    if len(head) >= 9:
        (header_length,) = struct.unpack("<Q", head[:8])
        if 2 <= header_length <= MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint (first bytes {head[:8]!r}): expected a torch zip archive (.ckpt), "
        "a legacy torch pickle or a safetensors file"
    )


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint at `path`, the `state_dict` nesting removed (once or twice)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, not a checkpoint file (a diffusers folder? convert it with "
            "`python -m ldm convert`)"
        )
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise CheckpointError(f"{path}: not a regular file (a device, pipe or socket); give a checkpoint file")
    kind = detect_format(path)
    state = _read_safetensors(path) if kind == "safetensors" else _read_pickle(path, kind)
    for _ in range(MAX_STATE_DICT_NESTING):
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{path}: 'state_dict' nested more than {MAX_STATE_DICT_NESTING} deep "
                              "(or containing itself): not a checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {[str(k)[:80] for k in list(state)[:10]]})")
    names = [k for k in tensors if not isinstance(k, str)]
    if names:
        raise CheckpointError(f"{path}: tensor names must be strings, found {names[0]!r:.80}")
    return tensors


def _read_pickle(path: Path, kind: str) -> object:
    try:
        check_zip(path) if kind == "zip" else check_legacy(path)
    except BrokenFile as broken:
        raise CheckpointError(f"{path}: a broken {kind} checkpoint: {broken}") from None
    except PickleRefused as refused:
        hint = (" If you trust the file, re-save its state dict as safetensors in a separate process."
                if "could run code" in str(refused) else "")
        raise CheckpointError(f"{path}: refused to load: {refused}. Nothing from the file was executed.{hint}"
                              ) from None
    inert = [(_InertPickledObject, name) for name in INERT_GLOBALS]
    # torch.load picks its reader by the file name for `.safetensors`: hand it the open file then.
    mmap = kind == "zip" and path.suffix != ".safetensors"
    try:
        with torch.serialization.safe_globals(inert), open(path, "rb") as f:
            return torch.load(path if mmap else f, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
        raise CheckpointError(f"{path}: a broken {kind} checkpoint ({type(error).__name__}: "
                              f"{str(error)[:300]!r})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
        if 8 + header_length > size:
            raise CheckpointError(
                f"{path}: the safetensors header claims {header_length} bytes but the file has only {size}"
            )
        try:
            header = json.loads(f.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({str(error)[:200]!r})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object")
    data_size = size - 8 - header_length
    for name, info in header.items():
        if name != "__metadata__":
            _check_safetensors_entry(path, name, info, data_size)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path}: a broken safetensors file ({str(error)[:300]!r})") from None


def _check_safetensors_entry(path: Path, name: str, info: object, data_size: int) -> None:
    """{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, end]} inside the data."""
    if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
        raise CheckpointError(f"{path}: the safetensors entry {name!r:.200} is not a tensor description "
                              f"(got {info!r:.100})")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise CheckpointError(f"{path}: tensor {name!r:.200} has the shape {shape!r:.100}, not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{path}: tensor {name!r:.200} has the data offsets {offsets!r:.100}, "
                              "not [begin, end] with 0 <= begin <= end")
    if offsets[1] > data_size:
        raise CheckpointError(
            f"{path}: tensor {name!r:.200} ends at byte {offsets[1]} of the data but the file holds only "
            f"{data_size} data bytes: the file is truncated or corrupt"
        )
