"""Byte-level byte-pair encoding (Sennrich et al. 2016; the byte-level variant of GPT-2 / CLIP).

A word is first written as UTF-8 bytes, each byte shown as one printable unicode character (so the
merges file is plain text), the last one marked with `</w>`. Then, round after round, the merge with
the lowest rank among the adjacent symbol pairs present is applied at every non-overlapping
occurrence, left to right, until no ranked pair is left.

The original recomputes every pair in every round, which is quadratic in the word's length (a
64,000-letter word took 30 s); `BytePairEncoder` applies the same rounds from a heap of pairs, in
O(n log n).
"""

from __future__ import annotations

import gzip
import heapq
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

MERGES_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
# The original uses the first 49152 - 256 - 2 merges of the file (the header line skipped), so that
# 256 bytes + 256 bytes with `</w>` + merges + 2 special tokens = 49408 ids.
NUM_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"
# The cache keeps the symbols of at most CACHE_WORDS words, the least recently used dropped first,
# and only of words of at most CACHE_WORD_BYTES bytes: prompts repeat their words ("highly
# detailed"), and ten thousand cover a server's working set, while long words (a CJK sentence is
# one word) rarely repeat and cost little to redo. Measured when full: ~4 MB of English words,
# ~21 MB at worst (words of eight 4-byte characters that no merge joins, ~2.1 KB each).
CACHE_WORDS = 10_000
CACHE_WORD_BYTES = 32


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
        self.pairs = {rank: pair for pair, rank in self.ranks.items()}
        # Least recently used first; bounded, see CACHE_WORDS.
        self.cache: OrderedDict[str, list[str]] = OrderedDict()

    def __call__(self, word: str) -> list[str]:
        symbols = self.cache.get(word)
        if symbols is not None:
            self.cache.move_to_end(word)
            return symbols
        symbols = self._merge(word)
        if len(word) <= CACHE_WORD_BYTES:  # one symbol per byte
            self.cache[word] = symbols
            if len(self.cache) > CACHE_WORDS:
                self.cache.popitem(last=False)
        return symbols

    def _merge(self, word: str) -> list[str]:
        """The rounds of the module docstring, without rescanning the word in each round.

        The symbols form a linked list (`after[i]`, `before[i]`; a merged-away symbol becomes None)
        and a heap holds (rank, i) for every ranked pair (symbols[i], its successor) as it forms.
        A round pops every entry of the lowest rank and merges at those positions left to right,
        skipping an entry whose pair has changed since it was pushed: that is the original's round,
        since a merge of (a, b) cannot form another (a, b) (the new symbol "ab" is longer than both),
        and the pairs a round forms, whatever their rank, wait for the next round, as in the original.
        """
        symbols: list[str | None] = list(word[:-1]) + [word[-1] + END_OF_WORD]
        n, ranks = len(symbols), self.ranks
        after = list(range(1, n)) + [-1]
        before = list(range(-1, n - 1))
        heap = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            first, second = self.pairs[rank]
            merged = first + second
            positions = []  # (rank, i) pops in increasing i: left to right
            while heap and heap[0][0] == rank:
                positions.append(heapq.heappop(heap)[1])
            for i in positions:
                j = after[i]
                if j < 0 or symbols[i] != first or symbols[j] != second:
                    continue  # merged away, or its pair changed, since it was pushed
                symbols[i], symbols[j] = merged, None
                after[i] = k = after[j]
                if k >= 0:
                    before[k] = i
                    new_rank = ranks.get((merged, symbols[k]))
                    if new_rank is not None:
                        heapq.heappush(heap, (new_rank, i))
                h = before[i]
                if h >= 0:
                    new_rank = ranks.get((symbols[h], merged))
                    if new_rank is not None:
                        heapq.heappush(heap, (new_rank, h))
        return [symbol for symbol in symbols if symbol is not None]
