"""Seeded random strings from many unicode blocks, for fuzzing the tokenizer against the original."""

from __future__ import annotations

import random

# (first, last) code points of the blocks the fuzz draws from; chosen to hit every branch of the
# cleaning and the word pattern: letters of many scripts, digits, marks, symbols, whitespace and
# control characters, ligatures and full-width forms that ftfy rewrites.
UNICODE_BLOCKS = {
    "basic latin": (0x20, 0x7E),
    "c0 controls": (0x00, 0x1F),
    "latin-1": (0xA0, 0xFF),
    "latin extended": (0x100, 0x24F),
    "ipa": (0x250, 0x2AF),
    "combining marks": (0x300, 0x36F),
    "greek": (0x370, 0x3FF),
    "cyrillic": (0x400, 0x4FF),
    "hebrew": (0x590, 0x5FF),
    "arabic": (0x600, 0x6FF),
    "devanagari": (0x900, 0x97F),
    "bengali": (0x980, 0x9FF),
    "thai": (0xE00, 0xE7F),
    "georgian": (0x10A0, 0x10FF),
    "hangul jamo": (0x1100, 0x11FF),
    "general punctuation": (0x2000, 0x206F),  # zero-width spaces and joiners, odd spaces, quotes
    "letterlike": (0x2100, 0x214F),
    "math operators": (0x2200, 0x22FF),
    "box drawing": (0x2500, 0x257F),
    "dingbats": (0x2700, 0x27BF),
    "cjk symbols": (0x3000, 0x303F),
    "hiragana": (0x3040, 0x309F),
    "katakana": (0x30A0, 0x30FF),
    "cjk ideographs": (0x4E00, 0x9FFF),
    "hangul syllables": (0xAC00, 0xD7A3),
    "alphabetic presentation": (0xFB00, 0xFB4F),  # ligatures ﬁ ﬂ
    "arabic presentation": (0xFE70, 0xFEFF),
    "halfwidth and fullwidth": (0xFF00, 0xFFEF),
    "specials": (0xFFF0, 0xFFFD),
    "math alphanumerics": (0x1D400, 0x1D7FF),
    "emoji": (0x1F300, 0x1F6FF),
    "supplemental symbols": (0x1F900, 0x1F9FF),
    "tags and variation": (0xE0020, 0xE007F),
}
PIECES = [" ", "  ", "\t", "\n", "\r\n", "&amp;", "&lt;", "&#39;", "&quot;", "'s", "'ll", "\u200d",
          "\ufe0f", "Ã©", "â€™", "<start_of_text>", "<end_of_text>", "<|endoftext|>"]


# Where the tokenizer's two flavours part (tokenizer/clip_tokenizer.py): "<" beside entities (ftfy
# then leaves them), entities escaped twice, the special tokens written out in either spelling and
# case, and the whitespace that `regex`'s \s and str.split() may see differently.
FLAVOUR_PIECES = PIECES + [
    "<", ">", "<b>", "</b>", "&amp;amp;", "&amp;lt;", "&lt;b&gt;", "&lt;|endoftext|&gt;", "&amp;#39;", "&nbsp;",
    "&#x263A;", "&#0;", "&", "<|startoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|>", "<start_of_text>",
    "<END_OF_TEXT>", "|", "<|", "|>", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u2029", "\xa0", "\u3000",
    "\u180e", "\u200b", "\ufeff",
]


def random_prompt(rng: random.Random, pieces: list[str] = PIECES, piece_rate: float = 0.3) -> str:
    """One string: a few runs, each from one block, with pieces (whitespace, entities) between."""
    parts = []
    for _ in range(rng.randint(0, 12)):
        if rng.random() < piece_rate:
            parts.append(rng.choice(pieces))
            continue
        first, last = UNICODE_BLOCKS[rng.choice(list(UNICODE_BLOCKS))]
        parts.append("".join(chr(rng.randint(first, last)) for _ in range(rng.randint(1, 15))))
    return "".join(parts)


def random_prompts(seed: int, count: int, pieces: list[str] = PIECES, piece_rate: float = 0.3) -> list[str]:
    rng = random.Random(seed)
    return [random_prompt(rng, pieces, piece_rate) for _ in range(count)]
