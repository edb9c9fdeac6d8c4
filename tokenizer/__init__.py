"""CLIP byte-level BPE tokenizer, written from scratch; depends on nothing else in the project."""

from .clip_tokenizer import CLIPTokenizer

__all__ = ["CLIPTokenizer"]
