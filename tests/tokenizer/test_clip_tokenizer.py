"""Our CLIPTokenizer against the original CLIP SimpleTokenizer (open_clip 3.3.0's tokenizer.py).

The reference pads with 0 (the v2 / open_clip convention). The v1 convention pads the same row
with the end-of-text id 49407 instead; the expected v1 row is built from the reference's ids.
"""

import hashlib
from pathlib import Path

import pytest
import torch

from tests.reference.clip_tokenizer import original_simple_tokenizer
from tests.tokenizer.unicode_fuzz import random_prompts
from tokenizer import CLIPTokenizer
from tokenizer.clean import clean_text

SOT, EOT = 49406, 49407
LONG_PROMPT = " ".join(f"word{i} lovely castle" for i in range(100))  # 300 words

CURATED = [
    "",
    "a photograph of an astronaut riding a horse",
    "A PHOTOGRAPH, Of An Astronaut!!! riding a horse...",
    "Café résumé naïve façade Ærøskøbing Straße",
    "東京の夜景、桜の木の下で 猫が寝ている",
    "서울의 밤 풍경",
    "مرحبا بالعالم، صورة لقطة",
    "שלום עולם",
    "नमस्ते दुनिया, एक सुंदर चित्र",
    "ภาพถ่ายของแมว",
    "Привет, мир! Ёжик в тумане",
    "👩‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 thumbs ❤️",
    "e\u0301 a\u0308 o\u0303 n\u0303 combining\u0301 marks\u0327",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; &#39;quoted&#39; &quot;q&quot; &nbsp;x &#x263A;",
    "cafÃ© â€œquotedâ€\x9d Ã¼ber naÃ¯ve",
    "tabs\tand\nnewlines\r\nand\u200bzero\u200cwidth\u200djoiners\ufeffbom\u00a0nbsp\u3000ideographic",
    "ﬁne ﬂower ＡＢＣ　ｆｕｌｌｗｉｄｔｈ １２３ ℌ𝔢𝔩𝔩𝔬 𝐛𝐨𝐥𝐝",
    "it's we're they've I'm you'll he'd IT'S",
    "1234567890 3.14159 1,000,000 2nd 42nd",
    "<start_of_text> inside <end_of_text> and <|endoftext|>",
    "   leading and trailing spaces   ",
    "\x00\x01\x1b[31mred\x1b[0m\x7f",
    "trending on artstation, 8k, (masterpiece:1.2), [[detailed]], {a|b}, <lora:x:0.5>",
    LONG_PROMPT,
    "水" * 200,
]


@pytest.fixture(scope="module")
def original():
    return original_simple_tokenizer()


@pytest.fixture(scope="module")
def ours():
    return CLIPTokenizer(pad_with="zero")


@pytest.fixture(scope="module")
def ours_v1():
    return CLIPTokenizer(pad_with="eot")


def expected_v1_rows(original, texts):
    """The reference rows with the zero padding after the end token replaced by 49407."""
    rows = original(texts)
    for row, text in zip(rows, texts):
        used = min(len(original.encode(text)), 75) + 2
        row[used:] = EOT
    return rows


def assert_same_as_original(original, ours, ours_v1, texts):
    for text in texts:
        assert ours.encode(text) == original.encode(text), repr(text)
    expected_v2 = original(texts)
    assert torch.equal(ours(texts), expected_v2)
    assert torch.equal(ours_v1(texts), expected_v1_rows(original, texts))
    for text in texts:
        assert_reports_the_cut_off_words(original, ours, text)


def assert_reports_the_cut_off_words(original, ours, text):
    """What we report as dropped covers exactly the ids the original cuts off, plus the kept start
    of a space-separated word cut part-way (we quote whole words). Compared as UTF-8 bytes of the pattern's words:
    a cut can fall inside a multi-byte character, and what the word pattern skips (spaces, and
    the few marks such as U+0345 that its case-insensitive classes miss) is not in the ids."""
    cut_ids = original.encode(text)[75:]
    reported = ours.truncated_text(text)
    if not cut_ids:
        assert reported == "", repr(text)
        return
    cut_symbols = "".join(original.decoder[i] for i in cut_ids).replace("</w>", "")
    cut_bytes = bytes(original.byte_decoder[c] for c in cut_symbols)
    reported_bytes = "".join(ours.word_pattern.findall(reported)).encode("utf-8")
    assert reported_bytes.endswith(cut_bytes), repr(text)
    first_word = "".join(ours.word_pattern.findall(reported.split(" ")[0]))
    assert len(reported_bytes) - len(cut_bytes) < len(first_word.encode("utf-8")), repr(text)

def test_merges_file_is_the_original_one():
    path = Path(__file__).parents[2] / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    data = path.read_bytes()
    assert len(data) == 1_356_917
    assert hashlib.sha256(data).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_vocabulary_layout(ours, original):
    assert ours.vocab_size == len(original.encoder) == 49408
    assert (ours.sot_id, ours.eot_id) == (SOT, EOT)
    assert ours.encoder == original.encoder


def test_curated_prompts_match_the_original(original, ours, ours_v1):
    assert_same_as_original(original, ours, ours_v1, CURATED)
    # The curated list really exercises truncation and padding in both conventions.
    lengths = [len(original.encode(t)) for t in CURATED]
    assert max(lengths) > 75 and min(lengths) == 0


def test_fuzz_2000_random_unicode_strings_match_the_original(original, ours, ours_v1):
    texts = random_prompts(seed=1234, count=2000)
    assert_same_as_original(original, ours, ours_v1, texts)
    truncated = sum(len(original.encode(t)) > 75 for t in texts)
    assert 100 < truncated < 1900, "the fuzz should cover both fitting and truncated prompts"


def test_known_ids_and_row_layout(ours_v1, ours):
    # The ids of this prompt are the ones every SD v1 pipeline feeds its text encoder.
    ids = [320, 8853, 539, 550, 18376, 6765, 320, 4558]
    assert ours_v1.encode("a photograph of an astronaut riding a horse") == ids
    row_v1 = ours_v1("a photograph of an astronaut riding a horse")
    assert row_v1.shape == (1, 77) and row_v1.dtype == torch.long
    assert row_v1[0, :10].tolist() == [SOT] + ids + [EOT]
    assert (row_v1[0, 10:] == EOT).all()
    assert (ours("a photograph of an astronaut riding a horse")[0, 10:] == 0).all()


def test_truncation_keeps_75_ids_and_ends_with_eot(ours_v1):
    row = ours_v1(LONG_PROMPT)[0]
    ids = ours_v1.encode(LONG_PROMPT)
    assert len(ids) > 75
    assert row.tolist() == [SOT] + ids[:75] + [EOT]
    dropped = ours_v1.truncated_text(LONG_PROMPT)
    # Each "wordN lovely castle" is 4 ids for N < 10 ("word", "N", ...) and 5 for N >= 10:
    # 40 + 7 * 5 = 75 ids fit, so the first dropped word is word17.
    assert dropped.startswith("word17 lovely castle word18") and dropped.endswith("word99 lovely castle")
    assert ours_v1.truncated_text("a short prompt") == ""


def test_decode_round_trips_the_cleaned_text_up_to_whitespace(ours):
    """BPE ids keep every non-space character and word ends, but not the spaces themselves:
    decode(encode(x)) equals clean(x) once whitespace is removed from both."""
    for text in CURATED:
        decoded = ours.decode(ours.encode(text))
        assert "".join(decoded.split()) == "".join(clean_text(text).split()), repr(text)
    assert ours.decode(ours.encode("hello, world")) == "hello , world "
    assert ours.decode(torch.tensor(ours.encode("Café"))) == "café "


def test_context_length_other_than_77():
    short = CLIPTokenizer(pad_with="zero", context_length=5)
    assert short("one two three four five").tolist() == [[SOT, 637, 1237, 2097, EOT]]
    assert CLIPTokenizer(context_length=2)("anything").tolist() == [[SOT, EOT]]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"pad_with": "pad"}, ValueError, ["pad_with", "'eot'", "'zero'"]),
        ({"pad_with": 0}, ValueError, ["pad_with", "'eot'", "'zero'"]),
        ({"context_length": 1}, ValueError, ["context_length", ">= 2"]),
        ({"context_length": 77.0}, TypeError, ["context_length", "int"]),
        ({"context_length": True}, TypeError, ["context_length", "int"]),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        CLIPTokenizer(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["ok", 3], {"a": 1}])
def test_non_string_prompts_are_refused(ours, bad):
    with pytest.raises(TypeError, match="must be a str"):
        ours(bad)


def test_non_string_encode_and_empty_batch_are_refused(ours):
    with pytest.raises(TypeError, match="text must be a str"):
        ours.encode(3.5)
    with pytest.raises(ValueError, match="empty list"):
        ours([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([49408])


def test_original_quirk_marks_that_case_fold_to_letters_are_dropped(original, ours):
    """The original's pattern runs case-insensitively, so U+0345 (a combining mark that case-folds
    to the letter iota) matches neither `[\\p{L}]+` nor `[^\\s\\p{L}\\p{N}]+`: it is silently dropped.
    We reproduce that, since the ids must be the original's."""
    assert original.encode("a\u0345b") == original.encode("a b") == ours.encode("a\u0345b")
    assert ours.encode("\u0345") == []
