"""The tokenizer's bounds: length limits, the early stop at a full window, the bounded BPE cache,
the dropped-words report, and the rewritten internals (heap BPE, bounded ftfy loop) against the
originals. A server takes prompts from the network, so no call may run for long on any text.
"""

import random

import ftfy
import pytest

import tokenizer.clip_tokenizer as clip_tokenizer
from tests.reference.clip_tokenizer import original_simple_tokenizer
from tests.tokenizer.test_clip_tokenizer import LONG_PROMPT, assert_reports_the_cut_off_words
from tests.tokenizer.unicode_fuzz import random_prompt
from tokenizer import CLIPTokenizer

SOT, EOT = 49406, 49407
METHODS = ["__call__", "encode", "truncated_text", "dropped_words"]


@pytest.fixture(scope="module")
def original():
    return original_simple_tokenizer()


@pytest.fixture()
def ours():
    return CLIPTokenizer(pad_with="zero")  # a fresh one per test: the BPE cache starts empty


def call(tokenizer, method, text):
    return tokenizer(text) if method == "__call__" else getattr(tokenizer, method)(text)


def letters(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))


def count_bpe_calls(tokenizer) -> list[str]:
    """Replace tokenizer.bpe by a spy; the returned list fills with the words that reach BPE."""
    seen, bpe = [], tokenizer.bpe
    tokenizer.bpe = lambda word: seen.append(word) or bpe(word)
    return seen


def test_limits_are_the_documented_numbers():
    from tokenizer.bpe import CACHE_WORD_BYTES, CACHE_WORDS
    from tokenizer.clean import MAX_FIX_PASSES
    from tokenizer.clip_tokenizer import DROPPED_WORDS_SHOWN, MAX_TEXT_CHARS, MAX_WORD_CHARS

    assert (MAX_TEXT_CHARS, MAX_WORD_CHARS, MAX_FIX_PASSES) == (10_000, 5_000, 8)
    assert (CACHE_WORDS, CACHE_WORD_BYTES, DROPPED_WORDS_SHOWN) == (10_000, 32, 20)


def test_a_64000_letter_word_is_refused_naming_the_limit_and_its_length(ours):
    """It took the original 30 s of BPE; now the raw length is refused before anything runs."""
    word = letters(0, 64_000)
    for method in METHODS:
        with pytest.raises(ValueError) as info:
            call(ours, method, word)
        assert "64,000 characters" in str(info.value) and "at most 10,000" in str(info.value), method


def test_a_1mb_cjk_run_is_refused_before_cleaning(ours, monkeypatch):
    """A million CJK characters are one `[\\p{L}]+` word (34 s before); ftfy must not even run."""
    def no_cleaning(text):
        raise AssertionError("clean_text ran on a text over the limit")

    monkeypatch.setattr(clip_tokenizer, "clean_text", no_cleaning)
    text = "".join(chr(0x4E00 + (i * 7919) % 20_000) for i in range(1_000_000))
    with pytest.raises(ValueError) as info:
        ours.encode(text)
    assert str(info.value).startswith("text is 1,000,000 characters long")
    assert "at most 10,000" in str(info.value)
    with pytest.raises(ValueError, match=r"texts\[1\] is 1,000,000 characters long"):
        ours(["a cat", text])


def test_the_text_limit_is_10000_characters_of_raw_text(ours):
    fits = "a " * 5_000
    assert len(fits) == 10_000
    assert ours.encode(fits) == [320] * 5_000
    with pytest.raises(ValueError) as info:
        ours.truncated_text(fits + "a")
    assert "10,001 characters" in str(info.value) and "at most 10,000" in str(info.value)
    # Raw length: 2,000 entities that clean to 2,000 characters are still 10,000 characters.
    with pytest.raises(ValueError, match="10,001 characters"):
        ours("&amp;" * 2_000 + "x")


def test_the_word_limit_is_5000_cleaned_characters_wherever_the_word_is(ours):
    word = letters(1, 5_001)
    assert len(ours.encode(word[:5_000])) > 75
    for text in [word, "a photo of " + word, "a " * 100 + word.upper()]:  # the last, far past the window
        for method in METHODS:
            with pytest.raises(ValueError) as info:
                call(ours, method, text)
            message = str(info.value)
            assert "a word of 5,001 characters" in message and "at most 5,000" in message, (method, message)
    # Cleaning can lengthen a word: each "ﬃ" ligature becomes "ffi".
    with pytest.raises(ValueError, match="a word of 5,001 characters"):
        ours("ﬃ" * 1_667)


def test_call_stops_encoding_once_the_window_is_full(ours):
    """BPE goes word by word, so the row needs only the words up to the 75th id."""
    words = [f"castle{i}" for i in range(1_000)]  # the words "castle", "1", "2", ...
    prompt = " ".join(words)
    assert len(prompt) <= 10_000
    seen = count_bpe_calls(ours)
    row = ours(prompt)[0].tolist()
    assert len(seen) <= 76, f"{len(seen)} words reached BPE for a 75-id window"
    seen.clear()
    ids = ours.encode(prompt)
    assert len(seen) == len(ours.word_pattern.findall(prompt)) == 3_890  # encode gives all the ids
    assert row == [SOT] + ids[:75] + [EOT]
    seen.clear()
    ours([prompt, prompt, prompt + " more"])  # identical texts are encoded once
    assert len(seen) <= 2 * 76
    for method in ["truncated_text", "dropped_words"]:
        seen.clear()
        call(ours, method, prompt)
        assert len(seen) <= 76, method


def test_the_bpe_cache_is_a_bounded_lru(ours):
    bpe = ours.bpe
    words = [ours.byte_encoder[ord("a")] + f"{i:05d}" for i in range(25_000)]
    for word in words:
        bpe(word)
    assert len(bpe.cache) == 10_000
    assert list(bpe.cache) == words[-10_000:]  # the 15,000 least recently used went first
    bpe(words[-10_000])  # a hit makes the oldest the newest
    bpe("b0")
    assert words[-10_000] in bpe.cache and words[-9_999] not in bpe.cache and len(bpe.cache) == 10_000
    long_word = "x" * 33  # over 32 bytes: computed, not kept
    assert bpe(long_word) == bpe._merge(long_word) and long_word not in bpe.cache
    for i in range(20):  # through the public path too: 1,400 distinct words in each prompt
        ours.encode(" ".join("".join(chr(97 + (i * 1_400 + j) // 26**k % 26) for k in range(4)) for j in range(1_400)))
        assert len(bpe.cache) <= 10_000


def test_dropped_words_quotes_at_most_20_words_and_counts_the_rest(ours):
    # 40 + 7 * 5 = 75 ids fit (see test_truncation_keeps_75_ids_and_ends_with_eot): word17 on is cut,
    # 83 * 3 = 249 space-separated words.
    dropped = ours.truncated_text(LONG_PROMPT).split()
    assert len(dropped) == 249
    words, more = ours.dropped_words(LONG_PROMPT)
    assert words == dropped[:20] and more == 229
    assert words[:4] == ["word17", "lovely", "castle", "word18"] and words[-1] == "lovely"
    assert ours.dropped_words(LONG_PROMPT, limit=5) == (dropped[:5], 244)
    assert ours.dropped_words(LONG_PROMPT, limit=0) == ([], 249)
    assert ours.dropped_words(LONG_PROMPT, limit=1_000) == (dropped, 0)
    assert ours.dropped_words("a short prompt") == ([], 0)
    assert ours.dropped_words("a short prompt").more == 0
    with pytest.raises(ValueError, match="limit must be an int >= 0"):
        ours.dropped_words(LONG_PROMPT, limit=-1)
    for bad in [2.5, True, "20"]:
        with pytest.raises(TypeError, match="limit must be an int >= 0"):
            ours.dropped_words(LONG_PROMPT, limit=bad)


def long_legal_prompts(seed: int, count: int) -> list[str]:
    """Prompts of 100 to 10,000 characters, log-uniform: random unicode runs, or prompt-like words."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        size = int(10 ** rng.uniform(2, 4))
        parts = []
        while sum(map(len, parts)) < size:
            parts.append(random_prompt(rng) if rng.random() < 0.5 else f"castle{rng.randint(0, 10**6)}, oil")
        prompts.append(" ".join(parts)[:size])
    return prompts


@pytest.mark.slow  # ~20 s: ftfy, twice in the original, on 300 prompts of up to 10,000 characters
def test_long_legal_prompts_match_the_original(original, ours):
    """The early stop changes no row: the original's full encode cut to the window, on 300 prompts;
    dropped_words is the start of what the original cuts off."""
    texts = long_legal_prompts(seed=77, count=300)
    assert max(map(len, texts)) <= 10_000 and sum(len(original.encode(t)) > 75 for t in texts) > 150
    for i in range(0, len(texts), 50):
        assert (ours(texts[i : i + 50]) == original(texts[i : i + 50])).all()
    for text in texts:
        assert_reports_the_cut_off_words(original, ours, text)
        dropped = ours.truncated_text(text).split()
        assert ours.dropped_words(text) == (dropped[:20], max(len(dropped) - 20, 0))


def test_heap_bpe_matches_the_original_on_long_and_repetitive_words(original, ours):
    """The heap applies the original's rounds: compared on words where rounds overlap ("aaaa" with
    the merge (a, a)), repeat, or are long (the original's own BPE is quadratic, so up to 2,000)."""
    rng = random.Random(5)
    words = ["a" * n for n in range(1, 40)] + ["ab" * 300, "aab" * 200, "ss" * 333, "水" * 500, "🎉" * 300]
    words += [letters(seed, rng.choice([50, 300, 2_000])) for seed in range(8)]
    words += ["".join(chr(rng.randint(0x1F300, 0x1F6FF)) for _ in range(500))]
    words += ["".join(rng.choice("eé水a") for _ in range(rng.randint(1, 60))) for _ in range(500)]
    for word in words:
        byte_word = "".join(ours.byte_encoder[b] for b in word.encode("utf-8"))
        assert ours.bpe(byte_word) == original.bpe(byte_word).split(" "), word[:40]


# -- regression tests for what tests/fuzz/tokenizer_fuzz.py found ------------------------------------------


def test_html_escaped_inside_itself_is_refused_after_8_ftfy_passes(original, ours):
    """Fuzz finding: ftfy repeats its fixes over a line until it stops changing and undoes one level
    of html escaping a pass, so "&" + "amp;" * 2000 (8,001 characters) cost 2,000 passes over the line
    (0.4 s; 4,000 levels 1.4 s, 3.5 s with CJK text on the line). At most 8 passes now."""
    with pytest.raises(ValueError) as info:
        ours.encode("&" + "amp;" * 2_000)
    message = str(info.value)
    assert message.startswith("text: a line of 8,001 characters") and "8 passes" in message
    assert "&amp;amp;amp;" in message
    escaped_7_times = "&" + "amp;" * 6 + "lt; tag"  # "<" escaped 7 times: 7 passes change it, the 8th not
    assert ours.encode(escaped_7_times) == original.encode(escaped_7_times)
    escaped_8_times = "&amp;" + escaped_7_times[1:]
    for method in METHODS:
        with pytest.raises(ValueError, match="8 passes"):
            call(ours, method, "a cat\n" + escaped_8_times + "\nmore")


def test_a_numeric_html_reference_too_long_for_int_is_refused_clearly(original, ours):
    """Fuzz finding: html.unescape reads "&#" + digits with int(), which refuses more than 4,300
    digits; the original fails with Python's message about integer string conversion."""
    text = "a photo &#" + "9" * 4_301 + "; of a cat"
    with pytest.raises(ValueError, match="integer string conversion"):
        original.encode(text)
    for method in METHODS:
        with pytest.raises(ValueError) as info:
            call(ours, method, text)
        assert "html character reference '&#' with more than 4,300 digits" in str(info.value), method
    with pytest.raises(ValueError, match="more than 4,300 digits"):
        ours.encode("&amp;#" + "0" * 4_301 + "65;")  # the first of the two unescapes makes it
    fits = "&#" + "0" * 4_298 + "65;"  # 4,300 digits: "A"
    assert ours.encode(fits) == original.encode(fits) == [320]


def test_fix_text_is_ftfy_fix_text():
    """The bounded loop of tokenizer/clean.py gives ftfy.fix_text's output: segments split after each
    newline, the "<" rule carried to later lines, and the lines no fix changes passed through."""
    from tokenizer.clean import fix_text

    texts = [
        "&amp;lt;b&amp;gt; line one\n<b>html here</b> &amp; kept\nthen &amp; kept too",  # no unescape after "<"
        "&amp;amp;amp; three levels\r\nCRLF\rCR\u2028LS\x85NEL",
        "plain ascii line\n\tindented, 100% {ok} [x] ~\n" * 3,
        "cafÃ© â€œquotedâ€\x9d\nÃ¼ber\x00\x1b[31mred\x1b[0m\ufeff ﬁne ＡＢＣ",
        "\n" * 50 + "é\n" * 50,
        "",
    ]
    rng = random.Random(9)
    texts += ["".join(chr(rng.randint(0x20, 0x7E)) for _ in range(80)) + "\n" for _ in range(300)]
    texts += ["\n".join(random_prompt(rng) for _ in range(rng.randint(1, 6))) for _ in range(500)]
    for text in texts:
        assert fix_text(text) == ftfy.fix_text(text), repr(text)
