"""The tokenizer's two flavours against their ground truths: "hf" against transformers 4.19.2's slow
CLIPTokenizer (what the v1 checkpoints were trained and sampled with, tests/reference/hf_tokenizer.py),
"openclip" against open_clip's SimpleTokenizer; the same ids and the same [B, 77] rows on a curated
list and on seeded fuzz made of the text where the two part."""

from __future__ import annotations

import pytest
import torch

from ldm.config import PRESETS
from tests.reference.clip_tokenizer import original_simple_tokenizer
from tests.reference.hf_tokenizer import run_hf_tokenizer
from tests.tokenizer.test_clip_tokenizer import CURATED, expected_v1_rows
from tests.tokenizer.unicode_fuzz import FLAVOUR_PIECES, random_prompts
from tokenizer import CLIPTokenizer

# Where transformers' copy and open_clip's part (each differs between the flavours)...
FLAVOURS_PART = [
    "&amp; <b>bold</b>",  # "<" in the text: ftfy unescapes nothing; open_clip's html.unescape still does
    "fish &amp;amp; chips <x>",  # escaped twice, beside "<": HF keeps both levels, open_clip undoes both
    "&amp;lt;b&amp;gt; <",
    "a<|endoftext|>b <|startoftext|> c",  # HF's specials: split out, ids 49407 / 49406
    "&amp; <|endoftext|> &amp;",  # the split comes first: each piece is ftfy'd alone, so both unescape
    "<|ENDOFTEXT|>x <|EndOfText|>",  # not split (case), but lower-cased, then the pattern takes them
    "<start_of_text> hi <end_of_text>",  # open_clip's specials: plain text to HF
    "&lt;|endoftext|&gt;",  # unescaped (by ftfy in HF) into HF's spelling of the special token
    "   <|startoftext|>   ",
    "&#39;quoted&#39; &quot;q&quot; &nbsp;x &#x263A; < &amp;",
]
# ... and where they agree although it may not look so.
FLAVOURS_AGREE = [
    "fish &amp;amp; chips",  # no "<": ftfy's passes undo both levels, as open_clip's two unescapes do
    "&lt;b&gt; and &amp;lt;",
    "x\x0by\x0cz\x1cw\x1fv\x85u\u2028t\u2029s\u180er\u200bq\ufeffp",  # \\s of regex vs str.split(), after ftfy
    "",
]
FLAVOUR_CURATED = FLAVOURS_PART + FLAVOURS_AGREE
FUZZ_COUNT = 2000


@pytest.fixture(scope="module")
def texts() -> list[str]:
    fuzz = random_prompts(seed=20, count=FUZZ_COUNT, pieces=FLAVOUR_PIECES, piece_rate=0.5)
    return FLAVOUR_CURATED + CURATED + fuzz


@pytest.fixture(scope="module")
def hf_reference(texts) -> tuple[list[list[int]], list[list[int]]]:
    return run_hf_tokenizer(texts)


def test_hf_flavour_gives_transformers_ids_and_rows(texts, hf_reference):
    ids, rows = hf_reference
    hf = CLIPTokenizer(pad_with="eot", flavour="hf")
    different = [(text, ours, theirs) for text, theirs in zip(texts, ids) if (ours := hf.encode(text)) != theirs]
    assert not different, different[:3]
    assert torch.equal(hf(texts), torch.tensor(rows))
    assert sum(len(i) > 75 for i in ids) > 100  # the rows are truncated as often as not


def test_openclip_flavour_gives_open_clips_ids_and_rows_on_the_same_texts(texts):
    original = original_simple_tokenizer()
    openclip = CLIPTokenizer(pad_with="zero", flavour="openclip")
    different = [text for text in texts if openclip.encode(text) != original.encode(text)]
    assert not different, different[:3]
    assert torch.equal(openclip(texts), original(texts))
    assert torch.equal(CLIPTokenizer(pad_with="eot")(texts), expected_v1_rows(original, texts))


def test_the_flavours_part_where_the_two_originals_do(texts, hf_reference):
    """Not a formality: the curated cases that part the originals part the flavours (each of which
    matches its own original above), and the fuzz is full of them."""
    hf, openclip = CLIPTokenizer(flavour="hf"), CLIPTokenizer(flavour="openclip")
    assert [text for text in FLAVOURS_PART if hf.encode(text) == openclip.encode(text)] == []
    assert [text for text in FLAVOURS_AGREE if hf.encode(text) != openclip.encode(text)] == []
    differing = sum(hf.encode(text) != openclip.encode(text) for text in texts)
    assert differing > 500, differing  # the fuzz is made of what parts them
    assert hf.decode(hf.encode("fish &amp;amp; chips <x>")) == "fish & amp ; amp ; chips < x > "
    assert openclip.decode(openclip.encode("fish &amp;amp; chips <x>")) == "fish & chips < x > "
    assert hf.encode("a<|endoftext|>b")[1] == 49407 and 49407 not in openclip.encode("a<|endoftext|>b")
    assert hf.decode([49406, 320, 49407]) == "<|startoftext|>a <|endoftext|>"


def test_each_preset_uses_its_originals_flavour():
    """v1 and v1-inpainting: transformers' (FrozenCLIPEmbedder); every v2 model: open_clip's
    (FrozenOpenCLIPEmbedder); the demo model: the one it was trained with, open_clip's."""
    flavours = {name: config.text_encoder.tokenizer for name, config in PRESETS.items()}
    assert flavours == {"v1": "hf", "v1-inpainting": "hf", "v2": "openclip", "v2-v": "openclip",
                        "v2-inpainting": "openclip", "v2-depth": "openclip", "x4-upscaler": "openclip",
                        "demo": "openclip"}


def test_a_bad_flavour_is_named():
    with pytest.raises(ValueError, match=r"flavour='clip' is not accepted; use one of: 'openclip' .*; 'hf'"):
        CLIPTokenizer(flavour="clip")
