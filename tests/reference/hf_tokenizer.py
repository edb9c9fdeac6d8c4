"""The tokenizer the v1 checkpoints were trained and sampled with: transformers 4.19.2's slow
CLIPTokenizer (the original v1 environment's), run in a subprocess by run_hf_tokenizer.py from the
wheel in the cache. No hub files: the folder it loads is the one `python -m ldm convert` writes for
a v1 model (checkpoints_convert/diffusers.py tokenizer_files: openai/clip-vit-large-patch14's
vocab.json, merges.txt and configs, made from the BPE file this project ships)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from checkpoints_convert.diffusers import tokenizer_files
from ldm.config import PRESETS

from .job import run_job
from .wheels import HUGGINGFACE_HUB_FOR_HF_TOKENIZER, TRANSFORMERS_FOR_V1, unpacked_wheel

RUNNER = Path(__file__).with_name("run_hf_tokenizer.py")


def run_hf_tokenizer(texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """-> (each text's ids without start/end, `tokenizer.encode(text, add_special_tokens=False)`;
    the [B, 77] rows FrozenCLIPEmbedder makes: truncation=True, max_length=77, padding="max_length")."""
    roots = [str(unpacked_wheel(*wheel)) for wheel in (TRANSFORMERS_FOR_V1, HUGGINGFACE_HUB_FOR_HF_TOKENIZER)]
    with tempfile.TemporaryDirectory(prefix="ldm-hf-tokenizer-") as tmp:
        tmp = Path(tmp)
        (tmp / "clip").mkdir()
        for name, text in tokenizer_files(PRESETS["v1"]).items():
            (tmp / "clip" / name).write_text(text, encoding="utf-8")
        job = {"roots": roots, "folder": str(tmp / "clip"), "texts": texts, "outputs": str(tmp / "outputs.json")}
        run_job(RUNNER, job, tmp, "transformers 4.19.2's CLIPTokenizer",
                {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        outputs = json.loads((tmp / "outputs.json").read_text())
        return outputs["ids"], outputs["rows"]
