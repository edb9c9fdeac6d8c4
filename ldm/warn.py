"""Warnings that point at the user's line, not at the library's."""

from __future__ import annotations

import sys
import warnings

# A warning names the first frame outside these (torch's no_grad decorator wraps every task).
SKIPPED_PACKAGES = {"ldm", "samplers", "tokenizer", "checkpoints_convert", "torch"}


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn, pointing at the caller's line: the first frame outside this project's packages
    and torch, not at the line here."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in SKIPPED_PACKAGES:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
