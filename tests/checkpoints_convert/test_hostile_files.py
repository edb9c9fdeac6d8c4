"""Hostile checkpoint files found by fuzzing: each is refused in well under a second with the
reader's own error, before torch's unpickler sees it (pickle_scan.py, torch_archive.py).

The files are built here opcode by opcode (protocol 2, what torch.save writes). The two that crash
or hang the old reader (a segfault, an endless loop) run in a subprocess, so a regression fails
the test instead of killing the suite.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from checkpoints_convert.pickle_scan import MAX_DEPTH
from checkpoints_convert.read import CheckpointError, read_checkpoint
from tests.fuzz.checkpoint_fuzz import legacy_parts  # the five pickles of a legacy save, then the data

ROOT = Path(__file__).resolve().parents[2]
STATE = {"w": torch.arange(12, dtype=torch.float32).reshape(4, 3)}


def short_text(text: str) -> bytes:
    """BINUNICODE: a str."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def torch_zip(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None,
              pickle_compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip laid out as torch.save lays it out: archive/data.pkl, archive/data/<key>, version."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl, compress_type=pickle_compression)
        archive.writestr("archive/version", "3\n")
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def saved_zip(tmp_path: Path, obj) -> tuple[bytes, dict[str, bytes]]:
    """(data.pkl, {storage key: bytes}) of torch.save(obj)."""
    torch.save(obj, tmp_path / "saved.ckpt")
    with zipfile.ZipFile(tmp_path / "saved.ckpt") as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0]
        records = {name.rsplit("/", 1)[1]: archive.read(name) for name in names if name.startswith(f"{prefix}/data/")}
        return archive.read(f"{prefix}/data.pkl"), records


def read_in_subprocess(path: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from checkpoints_convert.read import read_checkpoint, CheckpointError\n"
            "try:\n    read_checkpoint(sys.argv[1])\nexcept CheckpointError as error:\n    print(error)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(str(path))
    return message


def test_a_global_named_by_a_huge_string_is_refused_without_formatting_it(tmp_path):
    """torch's weights_only error runs a regex quadratic in the name: 100,000 characters took 131 s."""
    name = "a" * 100_000
    data_pkl = b"\x80\x02c" + name.encode() + b"\nb\n."
    message = refusal(torch_zip(tmp_path / "long-global.ckpt", data_pkl))
    assert "a global named by 100,002 characters" in message and "Nothing from the file was executed" in message
    assert len(message) < 500


def test_a_dict_key_nested_200000_deep_is_refused_not_a_segfault(tmp_path):
    """A 400 KB file: {((((1,),),)...): 2}. torch's unpickler died with SIGSEGV (rc 139)."""
    data_pkl = b"\x80\x02}q\x00K\x01" + b"\x85" * 200_000 + b"K\x02s."
    result = read_in_subprocess(torch_zip(tmp_path / "deep.ckpt", data_pkl))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"nests containers more than {MAX_DEPTH} deep" in result.stdout


def test_a_state_dict_containing_itself_is_refused_not_an_endless_loop(tmp_path):
    """d = {}; d["state_dict"] = d: a 60-byte pickle that made the unwrap loop spin forever."""
    data_pkl = b"\x80\x02}q\x00" + short_text("state_dict") + b"h\x00s."
    result = read_in_subprocess(torch_zip(tmp_path / "loop.ckpt", data_pkl))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'state_dict' nested more than 3 deep (or containing itself)" in result.stdout


def test_bytearray_of_a_huge_size_is_refused(tmp_path):
    """bytearray(N) is on torch's allowlist: 5 bytes of pickle became N bytes of memory."""
    data_pkl = b"\x80\x02}q\x00" + short_text("x") + b"cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85Ru."
    message = refusal(torch_zip(tmp_path / "bytearray.ckpt", data_pkl))
    assert "'builtins.bytearray'" in message and "could run code" in message


def test_a_stride_0_view_larger_than_its_storage_is_refused(tmp_path):
    """torch.save of one float expanded to 10**9 elements: 4 bytes that became 8 GB once cast."""
    data_pkl, records = saved_zip(tmp_path, {"state_dict": {"w": torch.ones(1).expand(10**9)}})
    assert records == {"0": struct.pack("<f", 1.0)}
    message = refusal(torch_zip(tmp_path / "stride0.ckpt", data_pkl, records))
    assert "a tensor of size (1000000000,) (strides (0,), offset 0) needs 1,000,000,000 elements" in message
    assert "its storage '0' holds 1" in message


def test_a_compressed_pickle_is_refused(tmp_path):
    """torch reads records as if stored: a 2 MB deflated data.pkl expanded to 4.3 GB and loaded."""
    data_pkl, records = saved_zip(tmp_path, {"state_dict": STATE})
    path = torch_zip(tmp_path / "deflated.ckpt", data_pkl, records, pickle_compression=zipfile.ZIP_DEFLATED)
    assert "'archive/data.pkl' is compressed" in refusal(path)


def test_a_record_shorter_than_its_storage_is_refused(tmp_path):
    """torch takes a storage's bytes at the record's offset whatever the record's size: a short
    record silently lends the tensor its neighbour's bytes."""
    data_pkl, records = saved_zip(tmp_path, {"state_dict": STATE})
    records["0"] = records["0"][:24]
    message = refusal(torch_zip(tmp_path / "short-record.ckpt", data_pkl, records))
    assert "record 'archive/data/0' holds 24 bytes but the pickle declares 12 x torch.FloatStorage = 48" in message


def test_a_legacy_storage_declared_but_never_filled_is_refused(tmp_path):
    """The old reader handed out the uninitialised memory of the storage as weights."""
    *head, _keys, _data = legacy_parts({"state_dict": STATE})
    path = tmp_path / "unfilled.ckpt"
    path.write_bytes(b"".join(head) + pickle.dumps([], protocol=2))
    assert "are declared but never filled" in refusal(path)


def test_a_truncated_legacy_file_is_refused(tmp_path):
    parts = legacy_parts({"state_dict": STATE})
    path = tmp_path / "cut.ckpt"
    path.write_bytes(b"".join(parts)[:-8])
    assert "a broken legacy-pickle checkpoint" in refusal(path) and "truncated" in refusal(path)


def test_a_legacy_storage_of_the_wrong_size_is_refused(tmp_path):
    *head, keys, data = legacy_parts({"state_dict": STATE})
    path = tmp_path / "resized.ckpt"
    path.write_bytes(b"".join(head) + keys + struct.pack("<q", 6) + data[8:32])
    assert "holds 6 elements, the pickle declares 12" in refusal(path)


REWRITE_AND_TRUNCATE = """
import os, sys, torch
from ldm.pipeline import StableDiffusion
path = sys.argv[1]
sd = StableDiffusion.from_checkpoint(path, device="cpu", dtype=torch.float32)
before = {name: p.detach().clone() for name, p in sd.state_dict().items()}
size = os.path.getsize(path)
with open(path, "r+b") as f:
    f.seek(4096)
    f.write(bytes(size - 4096))
changed = [name for name, value in before.items() if not torch.equal(value, sd.state_dict()[name])]
os.truncate(path, 100)
changed += [name for name, value in before.items() if not torch.equal(value, sd.state_dict()[name])]
print("changed", len(changed), "sum", round(sum(float(v.float().abs().sum()) for v in before.values())))
"""


@pytest.mark.parametrize("fmt", ["zip", "safetensors"])
def test_a_loaded_model_does_not_change_when_its_file_is_rewritten_or_truncated(tmp_path, tiny_checkpoint, fmt):
    """read_checkpoint maps the file; from_checkpoint copies what it keeps. Before, float32
    weights stayed mapped: rewriting the file changed the model, truncating it killed the process
    (SIGBUS) on the next read. In a subprocess: every byte after the first 4 KB is zeroed, then the
    file is cut to 100 bytes, and the weights are still the ones read."""
    path = tmp_path / f"model.{'ckpt' if fmt == 'zip' else 'safetensors'}"
    if fmt == "zip":
        torch.save({"state_dict": load_file(tiny_checkpoint)}, path)
    else:
        path.write_bytes(tiny_checkpoint.read_bytes())
    result = subprocess.run([sys.executable, "-c", REWRITE_AND_TRUNCATE, str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    changed, total = result.stdout.split()[1], int(result.stdout.split()[3])
    assert changed == "0" and total > 1000, result.stdout


# -- found by tests/fuzz/checkpoint_fuzz.py (seed 0, before the fixes): tracebacks, not messages -----

def safetensors_with_header(path: Path, header: dict, data: bytes = bytes(16)) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("entry, words", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, "has the data offsets [0], not [begin, end]"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}, "has the shape [-1], not a list of sizes"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "not [begin, end] with 0 <= begin <= end"),
    ("x", "is not a tensor description"),
], ids=["one-offset", "negative-size", "reversed-offsets", "not-a-dict"])
def test_a_safetensors_entry_that_is_not_a_tensor_description_is_named(tmp_path, entry, words):
    """[0] as data_offsets raised IndexError from the reader's own check."""
    path = safetensors_with_header(tmp_path / "entry.safetensors", {"w": entry})
    assert words in refusal(path)


def test_a_zip_whose_directory_points_before_the_file_is_broken_not_an_oserror(tmp_path):
    """The end record's directory offset raised by 1000: zipfile then puts the local headers at
    negative offsets, and seeking there raised OSError (EINVAL)."""
    data = bytearray(saved_zip_bytes(tmp_path))
    end = data.rindex(b"PK\x06\x06")  # torch writes the zip64 end record, which zipfile reads
    (offset,) = struct.unpack("<Q", data[end + 48 : end + 56])
    data[end + 48 : end + 56] = struct.pack("<Q", offset + 1000)
    path = tmp_path / "shifted.ckpt"
    path.write_bytes(bytes(data))
    message = refusal(path)
    assert "a broken zip checkpoint" in message and "outside the file" in message


def test_a_zip_record_with_a_bad_crc_is_broken_not_a_badzipfile(tmp_path):
    data = bytearray(saved_zip_bytes(tmp_path))
    data[data.index(b"state_dict")] ^= 0x20  # inside data.pkl: its CRC no longer matches
    path = tmp_path / "crc.ckpt"
    path.write_bytes(bytes(data))
    message = refusal(path)
    assert "a broken zip checkpoint" in message and "Bad CRC-32" in message


def test_a_pickle_protocol_python_does_not_know_is_refused(tmp_path):
    """PROTO 48 reached torch, which warned about it on the terminal and went on."""
    message = refusal(torch_zip(tmp_path / "proto.ckpt", b"\x800}."))
    assert "declares protocol 48" in message


def saved_zip_bytes(tmp_path: Path) -> bytes:
    torch.save({"state_dict": STATE}, tmp_path / "saved-whole.ckpt")
    return (tmp_path / "saved-whole.ckpt").read_bytes()
