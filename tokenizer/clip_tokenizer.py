"""The CLIP tokenizer: cleaned text -> words -> byte-level BPE ids -> a [B, 77] tensor.

Two flavours of the original CLIP `SimpleTokenizer`, which differ on a few kinds of text:

- "openclip" (SD v2, open_clip's copy): ftfy, html.unescape twice, whitespace, lower case; the
  special tokens are spelled <start_of_text> / <end_of_text>.
- "hf" (SD v1, which was trained and sampled with transformers' slow CLIPTokenizer, 4.19.2 in the
  original environment): the literal strings <|startoftext|> / <|endoftext|> are split out of the
  raw text first and become ids 49406 / 49407; each piece between them gets ftfy (which unescapes
  html only in a piece without "<"), whitespace, lower case, and no html.unescape of its own.

They give different ids for html entities in a text with "<" ("&amp; <b>", "&amp;amp; <b>") and
for the special tokens written out; everywhere else the same (ftfy's passes undo any depth of
escaping in a text without "<", as the two unescapes do). The padding id is separate
(`pad_with`): v1 pads with the end-of-text id 49407, v2 with 0.

Every call is bounded, since a server takes prompts from the network: a text over MAX_TEXT_CHARS
characters, or with a word over MAX_WORD_CHARS, is refused with a ValueError before anything
costly runs, and the [B, 77] rows stop encoding once the window is full (BPE goes word by word,
so later words never change earlier ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import regex
import torch

from .bpe import END_OF_WORD, BytePairEncoder, bytes_to_unicode, load_merges
from .clean import clean_text, clean_text_hf

# The two special tokens (ids 49406, 49407), spelled as open_clip's SimpleTokenizer spells them;
# OpenAI's CLIP and HF write "<|startoftext|>" / "<|endoftext|>" (checkpoints_convert/diffusers.py).
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
PAD_CHOICES = {"eot": "pad with the end-of-text id 49407 (SD v1)", "zero": "pad with 0 (SD v2)"}
FLAVOURS = {"openclip": "open_clip's SimpleTokenizer (SD v2)", "hf": "transformers' slow CLIPTokenizer (SD v1)"}
# Each flavour's spelling of the special tokens, in its word pattern and its vocabulary.
SPECIALS = {"openclip": (START_OF_TEXT, END_OF_TEXT), "hf": ("<|startoftext|>", "<|endoftext|>")}
# The largest text and word accepted: far above any real prompt (only the first 75 tokens, a few
# hundred characters, reach the text encoder), small enough that one call stays well under 0.5 s.
# Measured on the 2-core development machine, slowest method, cold cache (the worst cases that
# tests/fuzz/tokenizer_fuzz.py prints first), with other jobs loading the machine: 0.20-0.37 s
# for 5,000 lines of one latin-1 character each (ftfy's work per line; the same 0.09-0.36 s with a
# 5,000-emoji word in place of half the lines), under 0.3 s for every other shape at the limits,
# 0.07-0.12 s for two words of 4,999 emoji (the worst for BPE). docs/tokenizer.md has the table.
# The text limit is checked on the raw text, before ftfy runs; the word limit on the cleaned
# words (a run of letters, or of other symbols, with no space: a CJK sentence is one word).
MAX_TEXT_CHARS = 10_000
MAX_WORD_CHARS = 5_000
DROPPED_WORDS_SHOWN = 20  # dropped_words' default: enough to recognise the cut, short enough to log


class DroppedWords(NamedTuple):
    """The start of what did not fit the window, for a warning: `words` (at most the limit asked
    for) and how many `more` words were dropped after them."""

    words: list[str]
    more: int


def build_vocabulary(merges: list[tuple[str, str]], specials: tuple[str, str] = SPECIALS["openclip"]) -> list[str]:
    """Ids in order: 256 byte symbols, the same with `</w>`, one per merge, then the 2 specials."""
    byte_symbols = list(bytes_to_unicode().values())
    return (
        byte_symbols
        + [symbol + END_OF_WORD for symbol in byte_symbols]
        + ["".join(merge) for merge in merges]
        + list(specials)
    )


class CLIPTokenizer:
    """CLIP byte-level BPE tokenizer (49408 ids; start 49406, end 49407), in the "openclip" (SD v2)
    or "hf" (SD v1) flavour (the module's docstring says where they differ).

    `tokenizer(texts)` gives LongTensor[B, context_length]: start, the ids, end, padding. A text
    whose ids do not fit keeps its first `context_length - 2` ids and still ends with the end id,
    as the original does; `truncated_text(text)` tells what was cut off, `dropped_words(text)` its
    first 20 words and how many more. Each method refuses a text over MAX_TEXT_CHARS characters, a
    word over MAX_WORD_CHARS, or html escaped inside itself over and over (tokenizer/clean.py).
    """

    def __init__(self, pad_with: str = "eot", context_length: int = 77, flavour: str = "openclip"):
        for name, value, choices in (("pad_with", pad_with, PAD_CHOICES), ("flavour", flavour, FLAVOURS)):
            if not isinstance(value, str) or value not in choices:
                raise ValueError(
                    f"{name}={value!r} is not accepted; use one of: "
                    + "; ".join(f"{k!r} ({v})" for k, v in choices.items())
                )
        if isinstance(context_length, bool) or not isinstance(context_length, int):
            raise TypeError(
                f"context_length must be an int >= 2 (77 for Stable Diffusion), got "
                f"{type(context_length).__name__} {context_length!r}"
            )
        if context_length < 2:
            raise ValueError(
                f"context_length={context_length} leaves no room for the start and end tokens; "
                "it must be >= 2 (77 for Stable Diffusion)"
            )
        self.pad_with = pad_with
        self.context_length = context_length
        self.flavour = flavour
        self.specials = SPECIALS[flavour]

        merges = load_merges()
        vocabulary = build_vocabulary(merges, self.specials)
        self.encoder = {symbol: i for i, symbol in enumerate(vocabulary)}
        self.decoder = dict(enumerate(vocabulary))
        self.vocab_size = len(vocabulary)
        self.sot_id, self.eot_id = (self.encoder[special] for special in self.specials)
        self.pad_id = self.eot_id if pad_with == "eot" else 0
        self.bpe = BytePairEncoder(merges)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        # The original's word pattern: the special tokens, English contractions, runs of letters,
        # single digits, runs of anything else that is not whitespace. Case-insensitive.
        start, end = (regex.escape(special) for special in self.specials)
        self.word_pattern = regex.compile(
            rf"{start}|{end}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )
        # "hf": the special tokens' literal strings, cut out of the raw text before any cleaning
        # (transformers' tokenize() splits on its special tokens first, then cleans each piece).
        self.special_split = regex.compile(f"({start}|{end})")

    # -- text <-> ids ----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start/end ids (the original `SimpleTokenizer.encode`): all of
        them, past the window too."""
        ids = []
        for match in self._words(text, "text")[1]:
            ids.extend(self._word_ids(match.group()))
        return ids

    def _words(self, text: str, name: str) -> tuple[str, list[regex.Match]]:
        """(the cleaned text, its words), refusing a text or a word over the limits.

        The raw length is checked first, so that nothing runs on a huge text; the words of the
        cleaned text are all checked before any is encoded, so a text is refused or accepted
        whichever method is called, wherever its long word is.
        """
        _check_text(text, name)
        try:
            cleaned = clean_text(text) if self.flavour == "openclip" else self._clean_hf(text)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        words = list(self.word_pattern.finditer(cleaned))
        for match in words:
            if match.end() - match.start() > MAX_WORD_CHARS:
                raise ValueError(
                    f"{name} has a word of {match.end() - match.start():,} characters with no space in it "
                    f"(starting {match.group()[:20]!r}); the tokenizer accepts words of at most "
                    f"{MAX_WORD_CHARS:,} characters (a run of letters, or of other symbols, is one word)"
                )
        return cleaned, words

    def _clean_hf(self, text: str) -> str:
        """The "hf" flavour: the special tokens' strings split out first, each piece between them
        cleaned on its own (clean_text_hf), the pieces joined by spaces (no word crosses a space,
        so the words are each piece's own)."""
        pieces = self.special_split.split(text)
        cleaned = [piece if i % 2 else clean_text_hf(piece) for i, piece in enumerate(pieces)]
        return " ".join(piece for piece in cleaned if piece)

    def _word_ids(self, word: str) -> list[int]:
        if word in self.specials:
            return [self.encoder[word]]
        byte_word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
        return [self.encoder[symbol] for symbol in self.bpe(byte_word)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of `ids`, each word followed by a space (the original's decode).

        Whitespace is not stored in the ids (only word ends are), so decode(encode(x)) equals the
        cleaned text up to whitespace: "hello, world" comes back as "hello , world ".
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        unknown = [i for i in ids if i not in self.decoder]
        if unknown:
            raise ValueError(f"ids {unknown[:10]} are outside the vocabulary 0..{self.vocab_size - 1}")
        symbols = "".join(self.decoder[i] for i in ids)
        # Every vocabulary symbol, the specials included, is spelled in byte symbols.
        data = bytearray(self.byte_decoder[c] for c in symbols)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    # -- batches of fixed length -----------------------------------------------------------------

    def __call__(self, texts: str | Sequence[str]) -> torch.LongTensor:
        """texts: str or list of B str -> LongTensor[B, context_length].

        Each distinct text is encoded once, and only until its window is full: the words after
        the first context_length - 2 ids never reach BPE.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or isinstance(texts, bytes):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is an empty list; give at least one prompt (\"\" is a valid one)")
        for i, text in enumerate(texts):
            _check_text(text, f"texts[{i}]")
        rows = {}
        for i, text in enumerate(texts):
            if text not in rows:
                rows[text] = self._window(self._first_ids(text, f"texts[{i}]"))
        return torch.tensor([rows[text] for text in texts], dtype=torch.long)

    def _first_ids(self, text: str, name: str) -> list[int]:
        """The ids of the first words of `text`, up to the first that reaches context_length - 2 ids."""
        budget, ids = self.context_length - 2, []
        for match in self._words(text, name)[1]:
            if len(ids) >= budget:
                break
            ids.extend(self._word_ids(match.group()))
        return ids

    def truncated_text(self, text: str) -> str:
        """The words of the cleaned `text` that do not fit the window, '' when everything fits.

        A word cut part-way counts as dropped, so the warning quotes whole (space-separated) words:
        "w28" is three ids (w, 2, 8), and a cut after "w" reports "w28", not "28". BPE stops at the
        first word over the budget, so at most context_length - 1 words are encoded.
        """
        cleaned, words = self._words(text, "text")
        budget, used = self.context_length - 2, 0
        for match in words:
            used += len(self._word_ids(match.group()))
            if used > budget:
                return cleaned[cleaned.rfind(" ", 0, match.start()) + 1 :]
        return ""

    def dropped_words(self, text: str, limit: int = DROPPED_WORDS_SHOWN) -> DroppedWords:
        """The first `limit` words of `truncated_text(text)` and how many more it has, for a warning
        of bounded size: ([], 0) when everything fits.

            words, more = tokenizer.dropped_words(prompt)
            if words:
                warn(f"dropped: {' '.join(words)}" + (f" ... and {more} more words" if more else ""))
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int >= 0 (how many dropped words to return), got {limit!r}")
        if limit < 0:
            raise ValueError(f"limit must be an int >= 0 (how many dropped words to return), got {limit!r}")
        words = self.truncated_text(text).split()
        return DroppedWords(words[:limit], max(len(words) - limit, 0))

    def _window(self, ids: list[int]) -> list[int]:
        """[start] + ids + [end], cut to context_length (end id kept last), then padded."""
        row = [self.sot_id] + ids[: self.context_length - 2] + [self.eot_id]
        return row + [self.pad_id] * (self.context_length - len(row))


def _check_text(text: object, name: str) -> None:
    """A str of at most MAX_TEXT_CHARS characters, checked before anything costly runs on it."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str (a prompt), got {type(text).__name__} {text!r:.80}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"{name} is {len(text):,} characters long; the tokenizer accepts at most {MAX_TEXT_CHARS:,} "
            "(Stable Diffusion uses only the first 75 tokens, a few hundred characters)"
        )

