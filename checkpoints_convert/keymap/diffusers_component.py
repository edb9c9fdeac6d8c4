"""How one component's tensors are named and shaped in a diffusers folder: the data, and moving by it.

The tables in `diffusers_unet.py`, `diffusers_autoencoder.py` and `diffusers_text.py` each build one
`ComponentMap` from the config, from OUR names to diffusers'. Most entries are pure renames; the
few that are not are kept in their own fields, so a reader sees every change of shape at once:

- `squeezed`: ours keeps a 1x1 convolution [C, C, 1, 1] where diffusers keeps a Linear [C, C]
  (the VAE's attention projections). Same numbers, two trailing axes of size 1 dropped.
- `split`: ours keeps one fused projection whose rows are [q; k; v] (torch's nn.MultiheadAttention
  in open_clip, SD v2's text encoder) where diffusers/transformers keep q_proj, k_proj, v_proj.
- `not_stored`: ours has the tensor, diffusers does not store it at all (SD v2's unused last text
  block); reading a folder back fills it with zeros (see diffusers_text.py for why that is safe).
- `ignored`: diffusers names that may sit in a file but hold no weight of ours.

Every conversion is a rename, a reshape or a row split of the same numbers, so both directions are
exact (bit for bit) on every stored tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..remap import list_keys


@dataclass(frozen=True)
class ComponentMap:
    renames: dict[str, str]  # ours -> diffusers, the same tensor
    squeezed: dict[str, str] = field(default_factory=dict)  # ours [C, C, 1, 1] -> diffusers [C, C]
    split: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ours [n*R, ...] -> n diffusers [R, ...]
    not_stored: frozenset[str] = frozenset()  # ours keys diffusers does not keep
    ignored: frozenset[str] = frozenset()  # diffusers keys that are no weight of ours

    def ours_keys(self) -> set[str]:
        return set(self.renames) | set(self.squeezed) | set(self.split) | set(self.not_stored)

    def diffusers_keys(self) -> set[str]:
        parts = [name for names in self.split.values() for name in names]
        return set(self.renames.values()) | set(self.squeezed.values()) | set(parts)

    def to_diffusers(self, state: Mapping[str, torch.Tensor], what: str,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Our component's state dict (prefix removed) -> diffusers names, tensors, optionally cast."""
        missing, unexpected = sorted(self.ours_keys() - set(state)), sorted(set(state) - self.ours_keys())
        if missing or unexpected:
            raise KeyError(f"{what}: our weights do not match the table: missing {list_keys(missing)}; "
                           f"unexpected {list_keys(unexpected)}")

        def cast(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().to(dtype or tensor.dtype).contiguous()

        out = {theirs: cast(state[ours]) for ours, theirs in self.renames.items()}
        out |= {theirs: cast(state[ours]).reshape(state[ours].shape[:2]) for ours, theirs in self.squeezed.items()}
        for ours, parts in self.split.items():
            # clone: safetensors refuses to write several views of one storage
            out |= {theirs: cast(chunk).clone() for theirs, chunk in zip(parts, state[ours].chunk(len(parts)))}
        return out

    def from_diffusers(self, tensors: Mapping[str, torch.Tensor], what: str,
                       shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
        """Diffusers names -> our component's state dict (prefix removed). Every stored key must be
        in the table and every table entry present; `shapes` (ours) sizes the not-stored zeros."""
        expected = self.diffusers_keys()
        present = {k for k in tensors if k not in self.ignored}
        missing, unexpected = sorted(expected - present), sorted(present - expected)
        if missing or unexpected:
            parts = [f"missing {list_keys(missing)}"] if missing else []
            parts += [f"unexpected {list_keys(unexpected)}"] if unexpected else []
            raise KeyError(f"{what}: the weights do not match the expected diffusers layout: " + "; ".join(parts))

        state = {ours: tensors[theirs] for ours, theirs in self.renames.items()}
        state |= {ours: tensors[theirs][:, :, None, None] for ours, theirs in self.squeezed.items()}
        state |= {ours: torch.cat([tensors[theirs] for theirs in parts]) for ours, parts in self.split.items()}
        dtype = next(iter(state.values())).dtype
        state |= {ours: torch.zeros(shapes[ours], dtype=dtype) for ours in self.not_stored}
        return state
