"""Text cleaning applied before byte-pair encoding, as the original CLIP tokenizer does it
(`clean_text`; `clean_text_hf` for transformers' copy of it, which the v1 models were trained with).

The order matters and is the original's: ftfy repairs mojibake and odd unicode, html entities are
unescaped twice (captions scraped from the web are often escaped twice), runs of whitespace
collapse to one space, and the result is lower-cased.

`fix_text` is `ftfy.fix_text` with ftfy's default settings, its two loops written out here so
that they are bounded: ftfy repeats all of its fixes over a line until the line stops changing,
and html entities escaped inside each other ("&amp;amp;amp;...") lose one level per pass, so
"&" + "amp;" * 4000 (16,001 characters) took 1.4 s, and with as much CJK text on the same line
3.5 s for 8,000 characters. A line still changing after MAX_FIX_PASSES passes is refused.
tests/tokenizer/test_limits.py checks that the loops give ftfy.fix_text's output.
"""

import html
import re
import sys
import unicodedata

import ftfy
import regex
from ftfy import fixes

# ftfy's own settle-to-a-fixed-point loop ends after the pass that changes nothing, so a line with
# html escaped k times needs k + 1 passes; real text is escaped at most two or three times.
MAX_FIX_PASSES = 8
# The fixes of one pass after the html unescape and the mojibake repair, in ftfy's order.
PASS_FIXES = (
    fixes.fix_c1_controls,
    fixes.fix_latin_ligatures,
    fixes.fix_character_width,
    fixes.uncurl_quotes,
    fixes.fix_line_breaks,
    fixes.fix_surrogates,
    fixes.remove_terminal_escapes,
    fixes.remove_control_chars,
)
# Lines that no ftfy fix changes: printable ASCII without "&" (no entity, no control character,
# no escape sequence, nothing to decode), tabs and newlines. Skipping them saves ftfy's ~20 us of
# work per line, which made a text of 10,000 newlines take 0.2 s.
UNCHANGED_BY_FTFY = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def fix_text(text: str) -> str:
    """`ftfy.fix_text(text)` (default settings), refusing a line that needs over MAX_FIX_PASSES passes.

    As ftfy does it: the text is fixed in independent segments, each line with its "\\n" (at most
    ftfy's 1,000,000 characters), and once a segment contains "<" the text is taken for html and
    entities are no longer unescaped, in that segment and every later one.
    """
    max_segment = ftfy.TextFixerConfig().max_decode_length
    out, unescape, start = [], True, 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        segment = text[start : min(end, start + max_segment)]
        start += len(segment)
        unescape = unescape and "<" not in segment
        out.append(segment if UNCHANGED_BY_FTFY.fullmatch(segment) else fix_segment(segment, unescape))
    return "".join(out)


def fix_segment(segment: str, unescape: bool) -> str:
    """`ftfy.fix_and_explain(segment).text`: all of ftfy's fixes, pass after pass, until one changes nothing."""
    line = segment
    for _ in range(MAX_FIX_PASSES):
        before = segment
        if unescape:
            segment = fixes.unescape_html(segment)
        segment = ftfy.fix_encoding(segment)
        for fix in PASS_FIXES:
            segment = fix(segment)
        segment = unicodedata.normalize("NFC", segment)
        if segment == before:
            return segment
    raise ValueError(
        f"a line of {len(line):,} characters (starting {line[:40]!r}) still changes after "
        f"{MAX_FIX_PASSES} passes of ftfy's fixes, the most the tokenizer runs (most likely html entities "
        f"escaped inside each other {MAX_FIX_PASSES} or more times, such as '&amp;amp;amp;...': each pass "
        "undoes one level); unescape the text before tokenizing it"
    )


def basic_clean(text: str) -> str:
    """ftfy fix, then html-unescape twice, then strip the ends (the original's `basic_clean`)."""
    text = fix_text(text)
    try:
        text = html.unescape(html.unescape(text))
    except ValueError:
        # html.unescape reads "&#" + digits with int(), which refuses more digits than
        # sys.get_int_max_str_digits() (4,300): the original stops here too, with Python's message.
        raise ValueError(
            f"an html character reference '&#' with more than {sys.get_int_max_str_digits():,} digits is more "
            "than html.unescape (which the original tokenizer runs too) can read"
        ) from None
    return text.strip()


def whitespace_clean(text: str) -> str:
    """Collapse every run of whitespace (Python's notion: str.split()) to a single space."""
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """The full cleaning of the original `SimpleTokenizer.encode`: basic, whitespace, lower case."""
    return whitespace_clean(basic_clean(text)).lower()


def clean_text_hf(text: str) -> str:
    """The cleaning of transformers' slow CLIPTokenizer (`_tokenize`, as in 4.19.2, the v1
    environment's): ftfy, then every run of `regex`'s \\s collapsed to one space, the ends stripped,
    lower case. No html.unescape of its own: only ftfy's, which leaves a segment with "<" alone."""
    return regex.sub(r"\s+", " ", fix_text(text)).strip().lower()
