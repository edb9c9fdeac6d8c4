"""Read an original checkpoint file into a flat {name: tensor} dict, safely.

The format is told by the file's first bytes, never by its extension:
- `PK\\x03\\x04`: a zip archive, torch's format since 1.6 (`.ckpt`, `.pt`, `.pth`);
- `\\x80` + a protocol byte: a legacy torch pickle (before 1.6);
- an 8-byte little-endian header length, then a JSON header: safetensors.

Pickles can run arbitrary code when loaded. They are read with torch's restricted unpickler
(`torch.load(weights_only=True)`), which builds only tensors, storages, ordered dicts and plain
Python values; any other global (`os.system`, ...) stops the load with an error naming it, before
anything from the file runs. The one exception is a short list of inert classes that the
original training code pickled into its released checkpoints: they are replaced by an empty
stand-in, never imported. Safetensors files are mapped from disk, not read whole.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch
from safetensors import safe_open

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
INERT_GLOBALS = ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]


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
    kind = detect_format(path)
    state = _read_safetensors(path) if kind == "safetensors" else _read_pickle(path, kind)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {list(state)[:10]})")
    return tensors


def _read_pickle(path: Path, kind: str) -> object:
    inert = [(_InertPickledObject, name) for name in INERT_GLOBALS]
    # torch.load picks its reader by the file name for `.safetensors`: hand it the open file then.
    mmap = kind == "zip" and path.suffix != ".safetensors"
    try:
        with torch.serialization.safe_globals(inert), open(path, "rb") as f:
            return torch.load(path if mmap else f, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
        message = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found or "weights_only" in message.lower():
            name = found.group(1) if found else "an object outside the allowed set"
            raise CheckpointError(
                f"{path}: refused to load: the pickle asks for {name}, which a weights file has no "
                "reason to contain (it could run code). Nothing from the file was executed. If you "
                "trust the file, re-save its state dict as safetensors in a separate process."
            ) from None
        raise CheckpointError(f"{path}: a broken {kind} checkpoint ({type(error).__name__}: {message[:300]})") from None


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
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({error})") from None
    data_size = size - 8 - header_length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        end = info.get("data_offsets", [0, 0])[1] if isinstance(info, dict) else None
        if not isinstance(end, int) or end > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {end} of the data but the file holds only "
                f"{data_size} data bytes: the file is truncated or corrupt"
            )
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path}: a broken safetensors file ({error})") from None
