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
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import torch

MADV_DONTNEED = 4  # <sys/mman.h> on Linux
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
        self.madvise = ctypes.CDLL(None, use_errno=True).madvise if self.ranges else None
        if self.madvise is not None:
            self.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

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
