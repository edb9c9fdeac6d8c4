"""Byte-level byte-pair encoding (Sennrich et al. 2016; the byte-level variant of GPT-2 / CLIP).

A word is first written as UTF-8 bytes, each byte shown as one printable unicode character (so the
merges file is plain text), the last one marked with `</w>`. Then the merge with the lowest rank
among adjacent symbol pairs is applied, everywhere in the word, until no ranked pair is left.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

MERGES_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
# The original uses the first 49152 - 256 - 2 merges of the file (the header line skipped), so that
# 256 bytes + 256 bytes with `</w>` + merges + 2 special tokens = 49408 ids.
NUM_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values to a printable character (the original's table).

    Printable latin-1 bytes map to themselves; the rest (control characters, space, ...) map to
    chr(256 + n) in byte order, so no symbol is whitespace or a control character. The dict's
    order (printable bytes first, then the others) is the order of the first 256 vocabulary ids.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def load_merges(path: Path = MERGES_FILE) -> list[tuple[str, str]]:
    """The ranked merge list: line k+1 of the file ("a b") is the merge of rank k."""
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]


class BytePairEncoder:
    """Turns one pre-tokenised word (already byte-mapped) into its BPE symbols."""

    def __init__(self, merges: list[tuple[str, str]]):
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        symbols = self.cache.get(word)
        if symbols is None:
            symbols = self.cache[word] = self._merge(word)
        return symbols

    def _merge(self, word: str) -> list[str]:
        symbols = list(word[:-1]) + [word[-1] + END_OF_WORD]
        ranks = self.ranks
        while len(symbols) > 1:
            pairs = zip(symbols, symbols[1:])
            best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            # Apply the merge at every non-overlapping occurrence, left to right (as the original).
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols
