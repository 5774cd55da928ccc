"""Keys of the edits already applied, for sequential (lifelong) editing.

AlphaEdit protects earlier edits by adding ``K_prev^T K_prev`` (the running sum over every key an earlier
edit was written at) to its system matrix; the reference code dropped it. Pass the same
:class:`EditHistory` to each ``compute_edits`` call whose result you apply; it is stored as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import EditFormatError


class EditHistory:
    """Per layer ``sum k k^T`` over the edited keys recorded so far (float32, on the keys' device)."""

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.n_keys: dict[int, int] = {}
        self.n_edits = 0

    def add(self, keys: dict[int, torch.Tensor]) -> None:
        """Record one edit's keys ``{layer: [m, d_ff]}``."""
        for layer, k in keys.items():
            k = k.detach().double()
            s = (k.T @ k).float()
            self.sums[layer] = self.sums[layer] + s.to(self.sums[layer].device) if layer in self.sums else s
            self.n_keys[layer] = self.n_keys.get(layer, 0) + k.shape[0]
        if keys:
            self.n_edits += 1

    def get(self, layer: int) -> torch.Tensor | None:
        return self.sums.get(layer)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {"n_edits": str(self.n_edits), "n_keys": json.dumps({str(k): v for k, v in self.n_keys.items()})}
        save_file({f"layer.{k}": v.contiguous().cpu() for k, v in self.sums.items()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EditHistory:
        path = Path(path)
        if not path.is_file():
            raise EditFormatError(f"{path}: no such edit history file")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            h = cls()
            h.sums = {int(k.split(".", 1)[1]): v for k, v in tensors.items()}
            h.n_keys = {int(k): int(v) for k, v in json.loads(meta["n_keys"]).items()}
            h.n_edits = int(meta["n_edits"])
        except (KeyError, ValueError, OSError) as e:
            raise EditFormatError(f"{path}: not an anyedit edit history ({e})") from None
        return h
