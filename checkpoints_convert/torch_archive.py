"""Check torch's two file formats against what their pickle declares, before torch reads them.

torch trusts its files: it reads a zip record's bytes at the record's offset whatever the
record's size or compression (a short or deflated record hands a tensor its neighbour's or
still-compressed bytes), and a legacy file's storage that is declared but never filled comes
back as uninitialised memory. Both checks here are linear in the file's pickle and directory.

- zip (torch >= 1.6): `<archive>/data.pkl` plus one record `<archive>/data/<key>` per storage,
  all stored uncompressed (torch writes them so);
- legacy (before 1.6): five pickles (magic number, protocol 1001, system info, the object, the
  list of storage keys), then for each key in that order an int64 element count and the bytes.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

from .pickle_scan import MAX_PICKLE_BYTES, BrokenFile, PickleRefused, ScanResult, scan

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
LOCAL_HEADER = b"PK\x03\x04"


def check_zip(path: Path) -> ScanResult:
    try:
        return _check_zip(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        raise BrokenFile(f"its zip archive is unreadable ({type(error).__name__}: {str(error)[:200]!r})") from None


def _check_zip(path: Path) -> ScanResult:
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        records = {}
        for info in archive.infolist():
            if info.filename in records:
                raise PickleRefused(f"the zip holds two records named {info.filename!r}")
            records[info.filename] = info
            if not 0 <= info.header_offset < size:
                raise BrokenFile(f"zip record {info.filename!r} starts at byte {info.header_offset:,}, "
                                 "outside the file")
            raw.seek(info.header_offset)
            header = raw.read(30)
            method = struct.unpack("<H", header[8:10])[0] if len(header) == 30 else None
            if header[:4] != LOCAL_HEADER or info.compress_type != zipfile.ZIP_STORED or method != 0:
                raise PickleRefused(f"zip record {info.filename!r} is compressed or has no local header "
                                    "(torch writes every record stored, and reads them as if they were)")
            if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
                raise PickleRefused(f"zip record {info.filename!r} claims {info.file_size:,} bytes, "
                                    f"past the end of the {size:,}-byte file")
        pickles = [name for name in records if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise PickleRefused(f"the zip holds {len(pickles)} data.pkl records, not 1")
        if records[pickles[0]].file_size > MAX_PICKLE_BYTES:
            raise PickleRefused(f"its pickle is {records[pickles[0]].file_size:,} bytes; "
                                f"weights files need under {MAX_PICKLE_BYTES:,}")
        result = scan(archive.read(pickles[0]), storage_id_length=5)
        prefix = pickles[0][: -len("data.pkl")]
        for key, storage in result.storages.items():
            record = records.get(f"{prefix}data/{key}")
            if record is None:
                raise PickleRefused(f"storage {key!r} has no record {prefix}data/{key} in the zip")
            if record.file_size != storage.nbytes:
                raise PickleRefused(f"record {record.filename!r} holds {record.file_size:,} bytes but the pickle "
                                    f"declares {storage.numel:,} x {storage.type_name} = {storage.nbytes:,}")
    return result


def check_legacy(path: Path) -> ScanResult:
    size = path.stat().st_size
    storages = {}
    with open(path, "rb") as f:
        magic, protocol = scan(f).root, scan(f).root
        if magic.value != LEGACY_MAGIC or protocol.value != LEGACY_PROTOCOL:
            raise PickleRefused("it starts with a pickle but not with torch's legacy magic number and protocol")
        scan(f)  # system info: a small dict
        result = scan(f, storage_id_length=6, storages=storages)
        keys = scan(f).root
        if keys.kind != "list" or not all(k.kind == "atom" and isinstance(k.value, str) for k in keys.items):
            raise PickleRefused("its list of storage keys is not a list of strings")
        order = [k.value for k in keys.items]
        if sorted(order) != sorted(storages) or len(set(order)) != len(order):
            unfilled = sorted(set(storages) - set(order))[:5]
            raise PickleRefused(f"its storages {unfilled} are declared but never filled (they would hold "
                                "uninitialised memory), or its key list names storages twice or undeclared")
        for key in order:
            count = f.read(8)
            if len(count) != 8:
                raise BrokenFile(f"storage {key!r} is missing: the file is truncated")
            (numel,) = struct.unpack("<q", count)
            if numel != storages[key].numel:
                raise PickleRefused(f"storage {key!r} holds {numel:,} elements, the pickle declares "
                                    f"{storages[key].numel:,}")
            if f.tell() + storages[key].nbytes > size:
                raise BrokenFile(f"storage {key!r} runs past the end of the file: it is truncated")
            f.seek(storages[key].nbytes, 1)
    return result
