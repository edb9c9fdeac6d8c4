"""Benchmark: tokenise 10,000 prompts with our CLIPTokenizer and with the original (open_clip's
SimpleTokenizer) in the same run, both starting with an empty BPE cache, and print both times.

    python tests/benchmarks/tokenizer_bench.py [--prompts 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.reference.clip_tokenizer import original_simple_tokenizer  # noqa: E402
from tests.tokenizer.unicode_fuzz import random_prompt  # noqa: E402
from tokenizer import CLIPTokenizer  # noqa: E402

SUBJECTS = ["an astronaut", "a cat", "a red fox", "an old lighthouse", "a castle", "a robot",
            "a bowl of ramen", "a samurai", "a hummingbird", "a steam locomotive", "a café terrace"]
PLACES = ["on the moon", "in a forest", "under the sea", "in Tokyo at night", "on a mountain top",
          "in a cyberpunk city", "in the desert", "at a market in Marrakech"]
STYLES = ["oil painting", "photograph, 35mm", "watercolor", "trending on artstation", "8k, highly detailed",
          "by Greg Rutkowski", "studio lighting", "cinematic", "concept art", "unreal engine", "bokeh"]


def prompts(count: int, seed: int = 0) -> list[str]:
    """Mostly prompt-like English with a seeded number in it (so words vary), 10% random unicode."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if rng.random() < 0.1:
            out.append(random_prompt(rng))
            continue
        styles = ", ".join(rng.sample(STYLES, rng.randint(1, 5)))
        out.append(f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}, {styles}, seed{rng.randint(0, 10**6)}")
    return out


def time_once(tokenizer, texts: list[str], batch: int = 16) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        tokenizer(texts[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N, each with fresh tokenizers")
    args = parser.parse_args()
    texts = prompts(args.prompts)
    ours_times, original_times = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        original_times.append(time_once(original_simple_tokenizer(), texts))
        ours_times.append(time_once(CLIPTokenizer(pad_with="zero"), texts))
    ours, original = min(ours_times), min(original_times)
    print(f"{args.prompts} prompts, best of {args.repeats}")
    print(f"original SimpleTokenizer: {original:.3f} s")
    print(f"ours CLIPTokenizer:       {ours:.3f} s  ({original / ours:.2f}x the original's speed)")


if __name__ == "__main__":
    main()
