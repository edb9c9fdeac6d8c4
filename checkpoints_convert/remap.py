"""Rename a state dict through a key table and load it, accounting for every key and shape."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def list_keys(keys: list[str]) -> str:
    """The count and the first ten keys, each repr()'d: a key is the file's text, and may hold
    escape sequences or newlines that must not reach the terminal raw."""
    shown = ", ".join(repr(key) for key in keys[:10])
    return f"{len(keys)} key(s): {shown}" + (", ..." if len(keys) > 10 else "")


def rename_keys(original: Mapping[str, torch.Tensor], table: Mapping[str, str], what: str) -> dict[str, torch.Tensor]:
    """original names -> our names. Every key must be in the table and every table entry present."""
    unexpected = sorted(k for k in original if k not in table)
    missing = sorted(k for k in table if k not in original)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing {list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {list_keys(unexpected)}")
        raise KeyError(f"{what}: the weights do not match the expected layout: " + "; ".join(parts))
    return {table[k]: v for k, v in original.items()}


def load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, assign: bool = False) -> None:
    """Copy `state` (our names) into `module`; every parameter and buffer filled, shapes equal.

    assign=True makes the given tensors the module's parameters instead of copying into them: for
    a module built on the meta device (no memory, no initialisation), the fast way to load.
    """
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise KeyError(f"{what}: missing {list_keys(missing)}; unexpected {list_keys(unexpected)}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{what}: {key!r} has shape {tuple(tensor.shape)} in the weights but "
                f"{tuple(expected[key].shape)} in the model"
            )
    module.load_state_dict(state, strict=True, assign=assign)
