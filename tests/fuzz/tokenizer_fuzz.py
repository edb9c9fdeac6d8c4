"""Fuzz the CLIP tokenizer with pathological text, for crashes and slow calls (a script, not a test).

    OMP_NUM_THREADS=1 python tests/fuzz/tokenizer_fuzz.py --seed 0 --seconds 120

First the known worst cases at the limits (tokenizer/clip_tokenizer.py) are timed, then seeded
random inputs of up to 1 MB: combining marks, zero-width joiners, RTL marks, astral characters,
CJK runs, nested html entities, ftfy mojibake, NUL and control characters, long words, many short
words, whitespace only, ... mixed. Each input goes through `tokenizer(text)`, `encode`,
`truncated_text` and `dropped_words`; each call is timed. An outcome is

- accepted: every method returned, and they agree (the row is start + encode's first ids + end,
  `dropped_words` is the start of `truncated_text`, which is empty exactly when all ids fit);
  with the reference cache present, `encode` also equals the original's on inputs whose words
  are short enough for the original's quadratic BPE;
- refused: every method raised the ValueError of a text over the limits (expected);
- a crash: any other exception, methods that disagree, or a mismatch with the original.

A call over --slow seconds (1 by default) is reported with the input's shape. The exit status is
1 when there was a crash or a slow call.
"""

from __future__ import annotations

import argparse
import html.entities
import math
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.tokenizer.unicode_fuzz import random_prompt  # noqa: E402
from tokenizer import CLIPTokenizer  # noqa: E402
from tokenizer.clean import clean_text  # noqa: E402
from tokenizer.clip_tokenizer import MAX_TEXT_CHARS, MAX_WORD_CHARS  # noqa: E402

METHODS = ("__call__", "encode", "truncated_text", "dropped_words")
MAX_INPUT = 1_000_000
PARITY_MAX_WORD = 300  # the original's BPE is quadratic in a word's length: compare on short words only
# The tokenizer's own refusals; any other ValueError is a crash (as Python's int() limit in html.unescape was).
EXPECTED_REFUSALS = {
    "characters long; the tokenizer accepts at most": "text over MAX_TEXT_CHARS",
    "the tokenizer accepts words of at most": "word over MAX_WORD_CHARS",
    "passes of ftfy's fixes": "line over MAX_FIX_PASSES",
    "html character reference '&#' with more than": "'&#' reference over 4,300 digits",
}


def chars(rng: random.Random, first: int, last: int, n: int) -> str:
    return "".join(chr(rng.randint(first, last)) for _ in range(n))


def tiled(rng: random.Random, make, n: int) -> str:
    """n characters: fully random up to 20,000, beyond that a random 4,096-character chunk repeated
    (a refused input need not be random, and 1 MB of random draws would take the fuzz's time)."""
    if n <= 20_000:
        return make(rng, n)[:n]
    chunk = make(rng, 4096) or " "
    return (chunk * (n // len(chunk) + 1))[:n]


# Each shape: (rng, n) -> a text of about n characters.
ENTITY_NAMES = list(html.entities.html5)


def combining_marks(rng, n):
    out = []
    while sum(map(len, out)) < n:
        out.append(chr(rng.choice([0x61, 0x65, 0x928, 0x5d0, 0x627])) + chars(rng, 0x300, 0x36F, rng.randint(1, 60)))
    return "".join(out)


def zero_width_joiners(rng, n):
    emoji = ["\U0001F469", "\U0001F468", "\U0001F467", "\U0001F466", "\u2764", "\U0001F3F3", "\U0001F308"]
    joiners = ["\u200d", "\u200c", "\u200b", "\ufe0f", "\ufe0e", "\u2060", "\ufeff", "\U0001F3FD"]
    return "".join(rng.choice(emoji if i % 2 else joiners) for i in range(n))


def rtl_marks(rng, n):
    marks = ["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2069"]
    return "".join(rng.choice(marks) if rng.random() < 0.4 else chars(rng, 0x5D0, 0x5EA, 1)
                   if rng.random() < 0.5 else chars(rng, 0x621, 0x64A, 1) for _ in range(n))


def astral(rng, n):
    blocks = [(0x1D400, 0x1D7FF), (0x1F300, 0x1F6FF), (0x20000, 0x2A6DF), (0xE0020, 0xE007F), (0x10000, 0x1007F)]
    return "".join(chars(rng, *rng.choice(blocks), 1) for _ in range(n))


def cjk_run(rng, n):
    return chars(rng, 0x4E00, 0x9FFF, n)


def nested_entities(rng, n):
    depth = rng.choice([1, 2, 3, 6, 7, 8, 9, 50, n // 4])
    chain = "&" + "amp;" * depth + rng.choice(["lt;", "amp;", "#38;", "eacute;", "quot;"])
    return (chain + rng.choice(["", " ", "x", "\n"])) * max(1, n // (len(chain) + 1))


def entity_soup(rng, n):
    out = []
    while sum(map(len, out)) < n:
        kind = rng.random()
        if kind < 0.5:
            out.append("&" + rng.choice(ENTITY_NAMES))
        elif kind < 0.8:
            out.append(f"&#{rng.choice([0, 1, 38, 59, 0xD800, 0x10FFFF, 0x110000, 10**30])};")
        elif kind < 0.82:  # Python's int() reads at most 4,300 digits
            out.append("&" + rng.choice(["", "amp;"]) + "#" + rng.choice("09") * rng.choice([4300, 4301, 9000]) + ";")
        else:
            out.append(f"&#x{rng.randint(0, 0x10FFFF):x}" + rng.choice([";", "", "&"]))
    return "".join(out)


def mojibake(rng, n):
    text = random_prompt(rng) or "café"
    for _ in range(rng.randint(1, 4)):
        text = text.encode("utf-8", "surrogatepass").decode(rng.choice(["latin-1", "cp1252", "cp437"]), "replace")
    return (text * (n // max(len(text), 1) + 1))[:n]


def controls(rng, n):
    pieces = ["\x00", "\x1b[31m", "\x1b[0m", "\x7f", "\x85", "\x9b", "\r", "\x0c", "\x0b"] + [chr(c) for c in range(32)]
    return "".join(rng.choice(pieces) if rng.random() < 0.7 else "a" for _ in range(n))


def long_word(rng, n):
    first, last = rng.choice([(0x61, 0x7A), (0x400, 0x44F), (0xAC00, 0xD7A3), (0x1D400, 0x1D6A5), (0x21, 0x2F)])
    return chars(rng, first, last, n)


def many_short_words(rng, n):
    return " ".join(chars(rng, 0x61, 0x7A, rng.randint(1, 3)) for _ in range(n // 3))


def whitespace_only(rng, n):
    spaces = [" ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u2029", "\u2003", "\x1c", "\x85"]
    return "".join(rng.choice(spaces) for _ in range(n))


def short_lines(rng, n):
    return "".join(chr(rng.choice([0x61, 0xE9, 0xC3, 0x4E2D, 0x1F600])) + "\n" for _ in range(n // 2))


def digits_and_specials(rng, n):
    pieces = ["<start_of_text>", "<end_of_text>", "<|endoftext|>", "'s", "'ll", "1", "23", "٣", "½", "²"]
    return "".join(rng.choice(pieces) for _ in range(n // 4))


def ligatures_fullwidth(rng, n):
    return "".join(rng.choice("ﬀﬁﬂﬃﬄﬅﬆＡＢＣ１２３！？　ｶﾞ") for _ in range(n))


def unicode_blocks(rng, n):
    out = []
    while sum(map(len, out)) < n:
        out.append(random_prompt(rng))
    return "".join(out)


SHAPES = {f.__name__: f for f in [
    combining_marks, zero_width_joiners, rtl_marks, astral, cjk_run, nested_entities, entity_soup, mojibake,
    controls, long_word, many_short_words, whitespace_only, short_lines, digits_and_specials,
    ligatures_fullwidth, unicode_blocks,
]}


def random_input(rng: random.Random) -> tuple[str, str]:
    """(shape, text): a size near a limit, below the text limit, or up to 1 MB; one shape or a mix."""
    roll = rng.random()
    if roll < 0.15:
        n = rng.choice([MAX_TEXT_CHARS, MAX_WORD_CHARS]) + rng.randint(-3, 3)
    elif roll < 0.8:
        n = int(math.exp(rng.uniform(0, math.log(MAX_TEXT_CHARS))))
    else:
        n = int(math.exp(rng.uniform(math.log(MAX_TEXT_CHARS), math.log(MAX_INPUT))))
    names = rng.sample(list(SHAPES), rng.choice([1, 1, 2, 3]))
    parts = [tiled(rng, SHAPES[name], n // len(names)) for name in names]
    sep = rng.choice(["", " ", "\n"])
    return "+".join(names), sep.join(parts)[:MAX_INPUT]


def worst_cases(rng: random.Random) -> dict[str, str]:
    """Inputs at the limits, each aimed at one costly step (ftfy's work per line and per pass, BPE)."""
    t, w = MAX_TEXT_CHARS, MAX_WORD_CHARS

    def words(make, length, sep=" ", room=t):
        count = (room + len(sep)) // (length + len(sep))
        return sep.join(make(length) for _ in range(count))

    def lines(make, count):
        return "".join(make() + "\n" for _ in range(count))

    nested = "&" + "amp;" * 6 + "lt; "  # "<" escaped 7 times: 7 passes that change it, an 8th that does not
    return {
        "newlines only": "\n" * t,
        "one latin-1 character a line": lines(lambda: chars(rng, 0x80, 0xFF, 1), t // 2),
        "mojibake 'Ã©' a line": "Ã©\n" * (t // 3),
        "one CJK character a line": lines(lambda: chars(rng, 0x4E00, 0x9FFF, 1), t // 2),
        "html escaped 7 times + latin-1": nested + words(lambda k: chars(rng, 0xC0, 0xFF, k), 50, room=t - 33),
        "html escaped 7 times + mojibake": nested + "".join(rng.choice("Ã©â€œÂ ") for _ in range(t - 33)),
        "two words of MAX_WORD_CHARS - 1 emoji": words(lambda k: chars(rng, 0x1F300, 0x1F6FF, k), w - 1),
        "two words of MAX_WORD_CHARS - 1 letters": words(lambda k: chars(rng, 0x61, 0x7A, k), w - 1),
        "two words of MAX_WORD_CHARS - 1 CJK": words(lambda k: chars(rng, 0x4E00, 0x9FFF, k), w - 1),
        "lines of 8 emoji": words(lambda k: chars(rng, 0x1F300, 0x1F6FF, k), 8, "\n"),
        "ligatures (3 letters each)": words(lambda k: "".join(rng.choice("ﬃﬄ") for _ in range(k)), w // 3),
        "distinct 1-character CJK words": " ".join(chars(rng, 0x4E00, 0x9FFF, 1) for _ in range(t // 2)),
        "distinct 5-letter words": words(lambda k: chars(rng, 0x61, 0x7A, k), 5),
        "latin-1 lines + a MAX_WORD_CHARS emoji word": lines(lambda: chars(rng, 0x80, 0xFF, 1), (t - w) // 2)
        + chars(rng, 0x1F300, 0x1F6FF, w),
    }


def call(tokenizer: CLIPTokenizer, method: str, text: str):
    if method == "__call__":
        return tokenizer(text)
    return getattr(tokenizer, method)(text)


class Report:
    def __init__(self, slow: float):
        self.slow_limit = slow
        self.tried = self.accepted = self.refused = self.parity_checked = 0
        self.refusals = dict.fromkeys(EXPECTED_REFUSALS.values(), 0)
        self.crashes: list[str] = []
        self.slow: list[str] = []
        self.max_seconds, self.max_shape = 0.0, ""

    def run(self, tokenizer, original, shape: str, text: str) -> None:
        self.tried += 1
        describe = f"{shape}, {len(text):,} characters, starting {text[:60]!r}"
        results, errors = {}, {}
        if self.tried % 50 == 0:
            tokenizer.bpe.cache.clear()  # sometimes start cold
        for method in METHODS:
            start = time.perf_counter()
            try:
                results[method] = call(tokenizer, method, text)
            except ValueError as error:
                reasons = [reason for expected, reason in EXPECTED_REFUSALS.items() if expected in str(error)]
                if not reasons:
                    self.crashes.append(f"{method}: unexpected ValueError {error}: {describe}")
                    return
                errors[method] = reasons[0]
            except Exception:  # noqa: BLE001 - the fuzz records every other exception as a crash
                self.crashes.append(f"{method}: {describe}\n{traceback.format_exc(limit=4)}")
                return
            finally:
                seconds = time.perf_counter() - start
                if seconds > self.max_seconds:
                    self.max_seconds, self.max_shape = seconds, f"{method} on {shape}, {len(text):,} characters"
                if seconds > self.slow_limit:
                    self.slow.append(f"{method} {seconds:.2f} s: {describe}")
        if errors and results:
            self.crashes.append(f"methods disagree ({sorted(errors)} refuse, {sorted(results)} accept): {describe}")
        elif errors:
            if len(set(errors.values())) > 1:
                self.crashes.append(f"methods refuse for different reasons {errors}: {describe}")
                return
            self.refused += 1
            self.refusals[errors["encode"]] += 1
        else:
            problem = self.check(tokenizer, original, results, text)
            if problem:
                self.crashes.append(f"{problem}: {describe}")
            else:
                self.accepted += 1

    def check(self, tokenizer, original, results, text) -> str:
        ids, budget = results["encode"], tokenizer.context_length - 2
        row = [tokenizer.sot_id] + ids[:budget] + [tokenizer.eot_id]
        row += [tokenizer.pad_id] * (tokenizer.context_length - len(row))
        if results["__call__"][0].tolist() != row:
            return "the row is not start + encode's first ids + end"
        dropped = results["truncated_text"].split()
        if results["dropped_words"] != (dropped[:20], max(len(dropped) - 20, 0)):
            return "dropped_words is not the start of truncated_text"
        if bool(dropped) != (len(ids) > budget):
            return "truncated_text is empty while ids were cut, or the reverse"
        words = tokenizer.word_pattern.findall(clean_text(text))
        if original is not None and max(map(len, words), default=0) <= PARITY_MAX_WORD:
            self.parity_checked += 1
            if original.encode(text) != ids:
                return "encode differs from the original's"
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=120.0, help="time budget for the random inputs")
    parser.add_argument("--slow", type=float, default=1.0, help="a call over this many seconds is a finding")
    parser.add_argument("--no-parity", action="store_true", help="skip the comparison with the original")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tokenizer = CLIPTokenizer()
    original = None
    if not args.no_parity:
        try:
            from tests.reference.clip_tokenizer import original_simple_tokenizer

            original = original_simple_tokenizer()
        except Exception as error:  # noqa: BLE001 - the reference is optional here
            print(f"no comparison with the original ({type(error).__name__}: {error})")
    report = Report(args.slow)

    print(f"known worst cases at the limits (MAX_TEXT_CHARS={MAX_TEXT_CHARS:,}, MAX_WORD_CHARS={MAX_WORD_CHARS:,}),"
          " slowest method, cold cache:")
    for name, text in worst_cases(rng).items():
        assert len(text) <= MAX_TEXT_CHARS, (name, len(text))
        times = []
        for method in METHODS:
            tokenizer.bpe.cache.clear()
            start = time.perf_counter()
            try:
                call(tokenizer, method, text)
                outcome = "accepted"
            except ValueError:
                outcome = "refused"
            times.append(time.perf_counter() - start)
        report.run(tokenizer, None, name, text)
        print(f"  {max(times):.3f} s  {name} ({len(text):,} characters, {outcome})")

    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        shape, text = random_input(rng)
        report.run(tokenizer, original, shape, text)

    print(f"inputs tried: {report.tried}")
    print(f"accepted: {report.accepted} (of which compared with the original: {report.parity_checked})")
    print(f"refused with ValueError (expected): {report.refused} ("
          + ", ".join(f"{reason}: {count}" for reason, count in report.refusals.items()) + ")")
    print(f"crashes: {len(report.crashes)}")
    for crash in report.crashes[:10]:
        print("  " + crash.replace("\n", "\n  "))
    print(f"slow calls (> {args.slow} s): {len(report.slow)}")
    for slow in report.slow[:10]:
        print("  " + slow)
    print(f"max seconds: {report.max_seconds:.3f} ({report.max_shape})")
    print(f"cache entries at the end: {len(tokenizer.bpe.cache)}")
    return 1 if report.crashes or report.slow else 0


if __name__ == "__main__":
    sys.exit(main())
