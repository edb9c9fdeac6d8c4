"""checkpoints_convert/pages.py: the pages of a mapped checkpoint handed back after a copy, and
nothing but a file's pages ever touched; the copies in memory advised to be huge pages."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import ldm.pipeline
from checkpoints_convert.pages import HUGE_PAGE, FilePages, empty_huge
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


def vm_flags_at(address: int) -> list[str]:
    """The VmFlags of the mapping that holds `address` (/proc/self/smaps; "hg": MADV_HUGEPAGE)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "VmFlags:":
                return fields[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_a_large_copy_is_advised_huge_pages_and_a_small_one_is_left_alone():
    """The advice is what the test can see whatever huge pages the kernel has free: the mapping's
    VM_HUGEPAGE flag ("hg"), on the whole 2 MiB pages inside the tensor only."""
    large = empty_huge(torch.Size([4096, 1024]), torch.float32)  # 16 MiB
    interior = -(-large.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    assert "hg" in vm_flags_at(interior) and "hg" in vm_flags_at(large.data_ptr() + 15 * 2**20 - HUGE_PAGE)
    small = empty_huge(torch.Size([256, 1024]), torch.float32)  # 1 MiB: plain torch.empty
    assert "hg" not in vm_flags_at(small.data_ptr())
    source = torch.randn(4096, 1024, generator=torch.Generator().manual_seed(1))
    assert torch.equal(large.copy_(source), source)


def test_from_checkpoint_copies_every_cpu_weight_into_empty_huge(tiny_checkpoint, monkeypatch):
    made = []

    def recording(shape, dtype):
        made.append(shape)
        return empty_huge(shape, dtype)

    monkeypatch.setattr(ldm.pipeline, "empty_huge", recording)
    sd = ldm.pipeline.StableDiffusion.from_checkpoint(tiny_checkpoint, device="cpu")
    assert len(made) == len(sd.state_dict()) > 100
