"""Run the v1 model's tokenizer as the original v1 environment had it: transformers 4.19.2's slow
CLIPTokenizer (tokenization_clip.py, with ftfy installed), built by from_pretrained from a local
folder as FrozenCLIPEmbedder builds it from openai/clip-vit-large-patch14, in a subprocess:
`python run_hf_tokenizer.py job.json`, started by hf_tokenizer.py.

transformers 4.19.2 checks its dependencies' versions at import (tokenizers < 0.13, which has no
wheel for this Python): that check is stood in for below. Its slow tokenizer takes only
`AddedToken` from tokenizers (the installed one); huggingface_hub is the 0.6.0 of its time (its
names are imported, never called: the folder is local).
"""

import json
import sys
import types


def main(job_path: str) -> None:
    job = json.load(open(job_path))
    sys.path[:0] = job["roots"]
    sys.modules["transformers.dependency_versions_check"] = types.ModuleType("transformers.dependency_versions_check")
    import transformers
    from transformers.models.clip.tokenization_clip import CLIPTokenizer

    if not transformers.__file__.startswith(job["roots"][0]) or transformers.__version__ != "4.19.2":
        raise SystemExit(f"imported the wrong transformers ({transformers.__version__}, {transformers.__file__})")
    tokenizer = CLIPTokenizer.from_pretrained(job["folder"], local_files_only=True)
    texts = job["texts"]
    rows = tokenizer(texts, truncation=True, max_length=77, padding="max_length")["input_ids"]  # FrozenCLIPEmbedder's
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    json.dump({"ids": ids, "rows": rows}, open(job["outputs"], "w"))


if __name__ == "__main__":
    main(sys.argv[1])
