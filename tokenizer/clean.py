"""Text cleaning applied before byte-pair encoding, as the original CLIP tokenizer does it.

The order matters and is the original's: ftfy repairs mojibake and odd unicode, html entities are
unescaped twice (captions scraped from the web are often escaped twice), runs of whitespace
collapse to one space, and the result is lower-cased.
"""

import html

import ftfy


def basic_clean(text: str) -> str:
    """ftfy fix, then html-unescape twice, then strip the ends (the original's `basic_clean`)."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    """Collapse every run of whitespace (Python's notion: str.split()) to a single space."""
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """The full cleaning of the original `SimpleTokenizer.encode`: basic, whitespace, lower case."""
    return whitespace_clean(basic_clean(text)).lower()
