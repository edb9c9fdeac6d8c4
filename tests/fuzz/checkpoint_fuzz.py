"""Fuzz the checkpoint reader with mutated files: a script with a seed and a time budget, not a test.

    python tests/fuzz/checkpoint_fuzz.py --seed 0 --seconds 300 [--keep findings/]

Three families of inputs, mutated from small valid files:
- safetensors: the JSON header mutated as JSON (dtypes, shapes, offsets, extra or missing
  entries, deep nesting, huge numbers, metadata with escape sequences) or as bytes;
- zip (torch >= 1.6): data.pkl mutated opcode by opcode (deleted, duplicated, swapped, inserted
  from a list of troublemakers, integer arguments made huge), records cut, padded or deflated;
- legacy pickles: the same opcode mutations on the main pickle, the key list and storage
  section cut or reordered; plus raw byte flips, inserts and truncations on every family.

Each file is read by `read_checkpoint` in a worker process, which is restarted when it dies.
Every outcome is counted: accepted (tensors came back), refused (CheckpointError or another error
of the reader's contract), crash (any other exception: a traceback a user would see), hang (over
--timeout seconds), death (the worker was killed by a signal), memory (the worker's peak RSS grew
by more than --memory-mb). The exit status is 1 when anything but accepted/refused happened.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickletools
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_ERRORS = ("CheckpointError", "FileNotFoundError", "IsADirectoryError")

WORKER = r"""
import json, resource, sys, time, traceback
sys.path.insert(0, sys.argv[1])
from checkpoints_convert.read import read_checkpoint
start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = line.strip()
    started = time.perf_counter()
    try:
        tensors = read_checkpoint(path)
        total = sum(t.numel() for t in tensors.values())
        for t in tensors.values():
            t.float().sum()  # touch every byte: a tensor past the mapped file would kill the worker
        result = {"status": "accepted", "detail": f"{len(tensors)} tensors, {total} elements"}
    except BaseException as error:
        name = type(error).__name__
        lines = traceback.format_exception_only(type(error), error)
        result = {"status": name, "detail": "".join(lines)[-400:]}
    result["seconds"] = time.perf_counter() - started
    result["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
    print(json.dumps(result), flush=True)
"""


class Worker:
    def __init__(self):
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        assert json.loads(self.process.stdout.readline())["ready"]

    def read(self, path: Path, timeout: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        answer = {}
        reader = _Reader(self.process.stdout, answer)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.process.kill()
            self.process.wait()
            reader.join()
            self.process = None
            return {"status": "hang", "detail": f"no answer in {timeout} s"}
        if "line" not in answer or not answer["line"]:
            code = self.process.wait()
            self.process = None
            return {"status": "death", "detail": f"worker exited with {code}"}
        return json.loads(answer["line"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()


class _Reader(__import__("threading").Thread):
    def __init__(self, stream, answer):
        super().__init__(daemon=True)
        self.stream, self.answer = stream, answer

    def run(self):
        self.answer["line"] = self.stream.readline()


# -- seeds: small valid files of each family --------------------------------------------------------

def seed_states():
    import torch

    state = {"model.diffusion_model.w": torch.randn(4, 3), "first_stage_model.b": torch.arange(5),
             "half": torch.randn(3, 2).half(), "bf16": torch.randn(2).bfloat16(), "flag": torch.tensor([True])}
    return [{"state_dict": state, "global_step": 7}, state, {"state_dict": {"state_dict": state}}]


def zip_parts(obj) -> tuple[bytes, dict[str, bytes]]:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0]
        records = {name[len(prefix) + 1 :]: archive.read(name) for name in names}
    return records.pop("data.pkl"), records


def legacy_parts(obj) -> list[bytes]:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    data, parts, start = buffer.getvalue(), [], 0
    stream = io.BytesIO(data)
    for _ in range(5):
        for _ in pickletools.genops(stream):
            pass
        parts.append(data[start : stream.tell()])
        start = stream.tell()
    return parts + [data[start:]]


def safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)


# -- mutations -------------------------------------------------------------------------------------

TROUBLE_OPS = [
    b"\x85" * 1000, b"(" * 50, b")", b"}", b"]", b"N", b"K\x00", b"J\xff\xff\xff\x7f", b"h\x00", b"h\xff",
    b"q\x00", b"t", b"R", b"b", b"u", b"s", b"a", b"e", b".", b"0", b"1", b"2", b"Q",
    b"cbuiltins\nbytearray\n", b"cos\nsystem\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch\nFloatStorage\n", b"ccollections\nOrderedDict\n", b"c" + b"x" * 5000 + b"\ny\n",
    b"\x8a\x08" + b"\xff" * 8, b"X\xff\xff\xff\x7f", b"\x8c\x05hello\x94", b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x93", b"\x81", b"\x92", b"\x96", b"\x97", b"\x98", b"I123\n", b"S'x'\n", b"V\x1b[31m\n",
]


def opcode_spans(data: bytes) -> list[bytes]:
    try:
        positions = [position for _, _, position in pickletools.genops(data)] + [len(data)]
    except Exception:  # noqa: BLE001 - an already broken pickle: mutate its bytes instead
        return [data]
    return [data[a:b] for a, b in zip(positions, positions[1:])]


def mutate_pickle(rng: random.Random, data: bytes) -> bytes:
    spans = opcode_spans(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(spans))
        choice = rng.randrange(6)
        if choice == 0 and len(spans) > 2:
            del spans[i]
        elif choice == 1:
            spans.insert(i, spans[i] * rng.choice([2, 3, 1000]))
        elif choice == 2:
            j = rng.randrange(len(spans))
            spans[i], spans[j] = spans[j], spans[i]
        elif choice == 3:
            spans.insert(i, rng.choice(TROUBLE_OPS))
        elif choice == 4 and spans[i][:1] in (b"K", b"M", b"J"):
            spans[i] = b"J" + struct.pack("<i", rng.choice([2**31 - 1, -1, 10**9, 0, 1, 255]))
        else:
            return mutate_bytes(rng, b"".join(spans))
    return b"".join(spans)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2:
            del data[i : i + rng.randint(1, 64)]
        elif choice == 3:
            data[i:i] = data[i : i + rng.randint(1, 256)] * rng.randint(1, 50)
        else:
            del data[i:]
    return bytes(data)


def write_zip(path: Path, rng: random.Random, data_pkl: bytes, records: dict[str, bytes]) -> None:
    records = dict(records)
    if rng.random() < 0.3:
        data_pkl = mutate_pickle(rng, data_pkl)
    else:
        key = rng.choice([k for k in records if k.startswith("data/")] or ["data/0"])
        change = rng.randrange(3)
        value = records.get(key, b"")
        records[key] = value[: len(value) // 2] if change == 0 else value + bytes(rng.randint(1, 64)) if change == 1 \
            else value
        if change == 2:
            data_pkl = mutate_pickle(rng, data_pkl)
    compress = zipfile.ZIP_DEFLATED if rng.random() < 0.1 else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl, compress_type=compress)
        for name, value in records.items():
            archive.writestr(f"archive/{name}", value)


def write_legacy(path: Path, rng: random.Random, parts: list[bytes]) -> None:
    parts = list(parts)
    choice = rng.randrange(4)
    if choice == 0:
        parts[3] = mutate_pickle(rng, parts[3])
    elif choice == 1:
        parts[4] = mutate_pickle(rng, parts[4])
    elif choice == 2:
        parts[5] = mutate_bytes(rng, parts[5])
    else:
        parts[rng.randrange(3)] = mutate_pickle(rng, parts[rng.randrange(3)])
    path.write_bytes(b"".join(parts))


def mutate_header(rng: random.Random, header: dict) -> dict:
    names = [n for n in header if n != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    choice = rng.randrange(9)
    if choice == 0:
        entry["dtype"] = rng.choice(["F64", "F32", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3", "X", 3, None])
    elif choice == 1:
        entry["shape"] = rng.choice([[], [0], [10**12], [-1], [2**63], [1] * 1000, [3, 4, 5], "x", [1.5]])
    elif choice == 2:
        entry["data_offsets"] = rng.choice([[0, 0], [0, 10**15], [-8, 8], [8, 0], [0], "x", [0, 2**64]])
    elif choice == 3:
        header[name * rng.randint(2, 2000)] = dict(entry)
    elif choice == 4:
        del header[name]
    elif choice == 5:
        depth = rng.choice([10, 1000, 100_000])
        header["__metadata__"] = {"x": "NESTED"}
        header["NESTED"] = "[" * depth + "1" + "]" * depth  # spliced in as text: json.dumps would recurse
    elif choice == 6:
        header["__metadata__"] = {"note\x1b[31m": "line\nbreak\x1b]0;title\x07", "n": "9" * 100_000}
    elif choice == 7:
        header[rng.choice(names)] = entry  # two names, one span
    else:
        header[name] = rng.choice([None, [], "x", 1, {"dtype": "F32"}])
    return header


def write_safetensors(path: Path, rng: random.Random, data: bytes) -> None:
    (length,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]
    if rng.random() < 0.7:
        header = mutate_header(rng, header)
        nested = header.pop("NESTED", None)
        text = json.dumps(header).encode()
        if nested is not None:
            text = text.replace(b'"NESTED"', nested.encode())
        length = len(text) if rng.random() < 0.9 else rng.choice([0, 1, len(text) + 100, 2**63])
        path.write_bytes(struct.pack("<Q", length) + text + body)
    else:
        path.write_bytes(mutate_bytes(rng, data))


# -- the campaign ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=300, help="time budget")
    parser.add_argument("--timeout", type=float, default=10, help="seconds one read may take before it is a hang")
    parser.add_argument("--memory-mb", type=float, default=1024, help="peak RSS growth that counts as a blow-up")
    parser.add_argument("--keep", type=Path, help="copy every finding (crash, hang, death, memory) here")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    states = seed_states()
    zips = [zip_parts(state) for state in states]
    legacies = [legacy_parts(state) for state in states]
    safetensors = [safetensors_bytes(states[1])]
    worker, counts, findings = Worker(), Counter(), []
    folder = Path(tempfile.mkdtemp(prefix="checkpoint-fuzz-"))
    deadline, tried, slowest = time.monotonic() + args.seconds, 0, (0.0, "")
    try:
        while time.monotonic() < deadline:
            family = rng.choice(["safetensors", "zip", "legacy", "bytes"])
            path = folder / f"case-{tried}.ckpt"
            if family == "safetensors":
                write_safetensors(path, rng, rng.choice(safetensors))
            elif family == "zip":
                write_zip(path, rng, *rng.choice(zips))
            elif family == "legacy":
                write_legacy(path, rng, rng.choice(legacies))
            else:
                source = folder / "source.ckpt"
                write_zip(source, random.Random(0), *zips[0]) if rng.random() < 0.5 else source.write_bytes(
                    b"".join(rng.choice(legacies)))
                path.write_bytes(mutate_bytes(rng, source.read_bytes()))
            result = worker.read(path, args.timeout)
            status = result["status"]
            if status not in ("accepted", "hang", "death"):
                status = "refused" if status in CONTRACT_ERRORS else "crash"
            if result.get("rss_mb", 0) > args.memory_mb:
                status = "memory"
                worker.stop()
                worker.process = None
            if "\x1b" in result.get("detail", "") or "\x07" in result.get("detail", ""):
                status = "raw escape in message"
            counts[f"{family}:{status}"] += 1
            slowest = max(slowest, (result.get("seconds", args.timeout), f"{family} case {tried}"))
            if status not in ("accepted", "refused"):
                findings.append((tried, family, status, result.get("detail", "")[-300:]))
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, args.keep / f"{status}-{family}-{tried}.ckpt")
            path.unlink()
            tried += 1
    finally:
        worker.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"seed {args.seed}, {args.seconds:.0f} s budget: {tried} files")
    for key in sorted(counts):
        print(f"  {key:32} {counts[key]}")
    print(f"  slowest read: {slowest[0]:.2f} s ({slowest[1]})")
    for case, family, status, detail in findings[:30]:
        print(f"FINDING case {case} ({family}): {status}: {detail!r}")
    return 1 if findings else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
