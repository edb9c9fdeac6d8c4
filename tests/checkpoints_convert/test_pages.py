"""checkpoints_convert/pages.py: the pages of a mapped checkpoint handed back after a copy, and
nothing but a file's pages ever touched."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from checkpoints_convert.pages import FilePages
from checkpoints_convert.read import read_checkpoint


def resident_kib(path) -> int:
    """This process's resident KiB of the file's mappings (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                inside = len(fields) == 6 and fields[5] == str(path.resolve())
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_a_copied_tensor_hands_its_file_pages_back_and_still_reads_the_same(tmp_path):
    path = tmp_path / "big.safetensors"
    weight = torch.randn(2048, 1024, generator=torch.Generator().manual_seed(0))  # 8 MiB
    save_file({"weight": weight, "bias": torch.randn(1024)}, path)
    tensors = read_checkpoint(path)
    pages = FilePages(path)
    copy = tensors["weight"].to(copy=True)
    before = resident_kib(path)
    assert before >= 8 * 1024 and pages.ranges
    assert not pages.release(copy)  # ordinary memory, not the file's
    assert pages.release(tensors["weight"])
    after = resident_kib(path)
    assert after <= before - 8 * 1024 + 8  # every page of the weight gone (a shared edge page may stay)
    # a released page reads back from the file: nothing was zeroed
    assert torch.equal(tensors["weight"], weight) and torch.equal(copy, weight)


def test_a_tensor_outside_the_file_is_never_released():
    ordinary = torch.randn(1024, 1024)
    kept = ordinary.clone()
    pages = FilePages(__file__)  # a file this process has not mapped
    assert not pages.ranges and not pages.release(ordinary)
    assert torch.equal(ordinary, kept)
