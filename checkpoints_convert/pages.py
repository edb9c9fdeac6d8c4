"""Handing back the pages of a memory-mapped checkpoint once its tensors are copied.

read_checkpoint maps the file (read.py); StableDiffusion.from_checkpoint copies every tensor it
keeps. Each page of the file read to make a copy stays in the process's resident memory (RSS)
until the mapping is closed, at the end of the load: a plain copy of a 4 GB file peaks at 8 GB
(measured, docs/performance.md, "Peak memory of a 512x512 image").

`madvise(MADV_DONTNEED)` over a range of a FILE mapping drops those pages from the process: the
data stays in the file and in the page cache, and touching the range again reads it back. (Over
anonymous memory the same call would zero the data, so only ranges inside a mapping of this very
file, as /proc/self/maps lists them, are ever released; a tensor the reader holds in ordinary memory
is left alone.) Linux only: elsewhere `release` does nothing and the peak is the plain copy's.

The copies themselves go into memory asked to be backed by 2 MiB pages (`empty_huge`,
madvise(MADV_HUGEPAGE), what torch does for every large tensor under THP_MEM_ALLOC_ENABLE=1). Every
UNet step reads all 3.4 GB of weights; on 4 KiB pages the translations miss the TLB all the time.
Measured here (docs/performance.md, "python -m ldm bench"): a 256x256 v1 step took 3.9 s with
the weights on 4 KiB pages, 3.3 s with them on huge pages, where diffusers' weights already are
(mapped from the page cache, whose large folios the kernel maps with 2 MiB pages).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import torch

MADV_DONTNEED, MADV_HUGEPAGE = 4, 14  # <sys/mman.h> on Linux
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
HUGE_PAGE = 2 * 2**20


@functools.cache
def _madvise():
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def empty_huge(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty(shape, dtype) on the CPU, the whole 2 MiB pages inside it advised to be huge
    pages before anything touches them (the kernel's transparent huge pages in "madvise" mode, the
    usual setting, give them only to memory that asks; in "never" mode the advice is ignored).
    Tensors under 4 MiB (which may hold no whole 2 MiB page), and systems other than Linux, get
    plain torch.empty."""
    tensor = torch.empty(shape, dtype=dtype)
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes >= 2 * HUGE_PAGE and sys.platform.startswith("linux"):
        start = -(-tensor.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (tensor.data_ptr() + nbytes) // HUGE_PAGE * HUGE_PAGE
        _madvise()(start, end - start, MADV_HUGEPAGE)  # advice: a refusal (EINVAL without THP) changes nothing
    return tensor


def mapped_ranges(path: str | Path) -> list[tuple[int, int]]:
    """[start, end) of every mapping of the file at `path` in this process (Linux's /proc/self/maps)."""
    if not sys.platform.startswith("linux"):
        return []
    target = str(Path(path).resolve())
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


class FilePages:
    """The mappings of one checkpoint file; `release(tensor)` drops the pages under a tensor that
    lies inside them (rounded out to whole pages, never past its mapping)."""

    def __init__(self, path: str | Path):
        self.ranges = mapped_ranges(path)
        self.madvise = _madvise() if self.ranges else None

    def release(self, tensor: torch.Tensor) -> bool:
        """True when the tensor's pages were dropped (it lies in the file's mapping)."""
        if self.madvise is None or tensor.device.type != "cpu" or tensor.numel() == 0:
            return False
        start = tensor.data_ptr()
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()))
        end = start + span * tensor.element_size()
        for low, high in self.ranges:
            if low <= start and end <= high:
                first, last = max(low, start // PAGE * PAGE), min(high, -(-end // PAGE) * PAGE)
                return self.madvise(first, last - first, MADV_DONTNEED) == 0
        return False
