"""The original CLIP tokenizer (`open_clip/tokenizer.py` with its merges file), loaded by file path.

Importing the `open_clip` package itself fails beside the CPU torch wheel (it imports torchvision),
so only this one self-contained module is loaded, from the unpacked wheel in the cache.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

from .wheels import OPEN_CLIP, unpacked_wheel


@lru_cache()
def original_tokenizer_module():
    path = unpacked_wheel(*OPEN_CLIP) / "open_clip" / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("reference_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def original_simple_tokenizer():
    """A fresh original `SimpleTokenizer` (empty BPE cache), padding with 0 as open_clip does."""
    return original_tokenizer_module().SimpleTokenizer()
