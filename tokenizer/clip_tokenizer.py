"""The CLIP tokenizer: cleaned text -> words -> byte-level BPE ids -> a [B, 77] tensor.

This reproduces the original CLIP `SimpleTokenizer` (as open_clip ships it), which both Stable
Diffusion v1 (through the HF tokenizer, same ids) and v2 (open_clip) use. The two differ only in
the padding id: v1 pads with the end-of-text id 49407, v2 with 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex
import torch

from .bpe import END_OF_WORD, BytePairEncoder, bytes_to_unicode, load_merges
from .clean import clean_text

# The two special tokens (ids 49406, 49407), spelled as open_clip's SimpleTokenizer spells them;
# OpenAI's CLIP and HF write "<|startoftext|>" / "<|endoftext|>" (checkpoints_convert/diffusers.py).
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
PAD_CHOICES = {"eot": "pad with the end-of-text id 49407 (SD v1)", "zero": "pad with 0 (SD v2)"}


def build_vocabulary(merges: list[tuple[str, str]]) -> list[str]:
    """Ids in order: 256 byte symbols, the same with `</w>`, one per merge, then the 2 specials."""
    byte_symbols = list(bytes_to_unicode().values())
    return (
        byte_symbols
        + [symbol + END_OF_WORD for symbol in byte_symbols]
        + ["".join(merge) for merge in merges]
        + [START_OF_TEXT, END_OF_TEXT]
    )


class CLIPTokenizer:
    """CLIP byte-level BPE tokenizer (49408 ids; start 49406, end 49407).

    `tokenizer(texts)` gives LongTensor[B, context_length]: start, the ids, end, padding. A text
    whose ids do not fit keeps its first `context_length - 2` ids and still ends with the end id,
    as the original does; `truncated_text(text)` tells what was cut off.
    """

    def __init__(self, pad_with: str = "eot", context_length: int = 77):
        if not isinstance(pad_with, str) or pad_with not in PAD_CHOICES:
            raise ValueError(
                f"pad_with={pad_with!r} is not accepted; use one of: "
                + "; ".join(f"{k!r} ({v})" for k, v in PAD_CHOICES.items())
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

        merges = load_merges()
        vocabulary = build_vocabulary(merges)
        self.encoder = {symbol: i for i, symbol in enumerate(vocabulary)}
        self.decoder = dict(enumerate(vocabulary))
        self.vocab_size = len(vocabulary)
        self.sot_id = self.encoder[START_OF_TEXT]
        self.eot_id = self.encoder[END_OF_TEXT]
        self.pad_id = self.eot_id if pad_with == "eot" else 0
        self.bpe = BytePairEncoder(merges)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        # The original's word pattern: the special tokens, English contractions, runs of letters,
        # single digits, runs of anything else that is not whitespace. Case-insensitive.
        self.word_pattern = regex.compile(
            rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )

    # -- text <-> ids ----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start/end ids (the original `SimpleTokenizer.encode`)."""
        _check_text(text, "text")
        ids = []
        for word in self.word_pattern.findall(clean_text(text)):
            ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> list[int]:
        if word in (START_OF_TEXT, END_OF_TEXT):
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
        """texts: str or list of B str -> LongTensor[B, context_length]."""
        rows = [self._window(ids) for ids in self._encode_batch(texts)]
        return torch.tensor(rows, dtype=torch.long)

    def truncated_text(self, text: str) -> str:
        """The words of the cleaned `text` that do not fit the window, '' when everything fits.

        A word cut part-way counts as dropped, so the warning quotes whole (space-separated) words:
        "w28" is three ids (w, 2, 8), and a cut after "w" reports "w28", not "28".
        """
        _check_text(text, "text")
        cleaned = clean_text(text)
        budget, used = self.context_length - 2, 0
        for match in self.word_pattern.finditer(cleaned):
            used += len(self._word_ids(match.group()))
            if used > budget:
                return cleaned[cleaned.rfind(" ", 0, match.start()) + 1 :]
        return ""

    def _encode_batch(self, texts: str | Sequence[str]) -> list[list[int]]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or isinstance(texts, bytes):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is an empty list; give at least one prompt (\"\" is a valid one)")
        for i, text in enumerate(texts):
            _check_text(text, f"texts[{i}]")
        return [self.encode(text) for text in texts]

    def _window(self, ids: list[int]) -> list[int]:
        """[start] + ids + [end], cut to context_length (end id kept last), then padded."""
        row = [self.sot_id] + ids[: self.context_length - 2] + [self.eot_id]
        return row + [self.pad_id] * (self.context_length - len(row))


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str (a prompt), got {type(text).__name__} {text!r:.80}")

