"""What the edits already applied leave behind, for sequential (lifelong) editing.

Two things are kept, and each update method uses what it can: per layer the running sum ``K_prev^T K_prev`` over
every key an earlier edit was written at (AlphaEdit adds it to its system matrix, as the paper does and the
reference code forgot; MEMIT adds it to its key covariance with ``history_weight``), and the token ids of the
earlier edits' texts (UnKE keeps the edited layer's output on them, so training for a new edit cannot undo an old
one). Pass the same :class:`EditHistory` to each ``compute_edits`` call whose result you apply, or use an
:class:`~anyedit.editing.stack.EditStack`, which keeps each edit's share beside it. Stored as safetensors.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import EditFormatError


class EditHistory:
    """Per layer ``sum k k^T`` over the edited keys recorded so far (float32, on the keys' device), and the
    token ids of every earlier edit text (``rows``)."""

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.n_keys: dict[int, int] = {}
        self.n_edits = 0
        self.rows: list[list[int]] = []
        self.starts: list[int] = []  # where each row's answer starts (its prompt length)

    def add(self, keys: dict[int, torch.Tensor], rows: list[list[int]] | None = None,
            starts: list[int] | None = None) -> None:
        """Record one edit's keys ``{layer: [m, d_ff]}``, the token ids of its edit texts and where each text's
        answer starts."""
        rows = rows or []
        if len(starts or []) != len(rows):
            raise ValueError("an answer start is needed for every edit text")
        for layer, k in keys.items():
            k = k.detach().double()
            self._add_sum(layer, (k.T @ k).float(), k.shape[0])
        self.rows.extend(list(r) for r in rows)
        self.starts.extend(int(s) for s in starts or [])
        if keys or rows:
            self.n_edits += 1

    def _add_sum(self, layer: int, s: torch.Tensor, n: int) -> None:
        self.sums[layer] = self.sums[layer] + s.to(self.sums[layer].device) if layer in self.sums else s
        self.n_keys[layer] = self.n_keys.get(layer, 0) + n

    def merge(self, other: EditHistory) -> None:
        """Add everything ``other`` recorded (e.g. one stacked edit's share)."""
        for layer, s in other.sums.items():
            self._add_sum(layer, s, other.n_keys.get(layer, 0))
        self.rows.extend(list(r) for r in other.rows)
        self.starts.extend(other.starts)
        self.n_edits += other.n_edits

    def get(self, layer: int) -> torch.Tensor | None:
        return self.sums.get(layer)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {"n_edits": str(self.n_edits), "n_keys": json.dumps({str(k): v for k, v in self.n_keys.items()})}
        tensors = {f"layer.{k}": v.contiguous().cpu() for k, v in self.sums.items()}
        if self.rows:
            tensors["rows.ids"] = torch.tensor([t for r in self.rows for t in r], dtype=torch.int64)
            tensors["rows.lengths"] = torch.tensor([len(r) for r in self.rows], dtype=torch.int64)
            tensors["rows.starts"] = torch.tensor(self.starts, dtype=torch.int64)
        save_file(tensors, str(path), metadata=meta)
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
            h.sums = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("layer.")}
            h.n_keys = {int(k): int(v) for k, v in json.loads(meta["n_keys"]).items()}
            h.n_edits = int(meta["n_edits"])
            if "rows.ids" in tensors:
                ids, lengths = tensors["rows.ids"].tolist(), tensors["rows.lengths"].tolist()
                if sum(lengths) != len(ids):
                    raise ValueError("row lengths do not add up to the stored token ids")
                offsets = [0, *itertools.accumulate(lengths)]
                h.rows = [ids[a:b] for a, b in zip(offsets, offsets[1:])]
                h.starts = tensors["rows.starts"].tolist()
                if len(h.starts) != len(h.rows):
                    raise ValueError("an answer start is needed for every stored text")
        except (KeyError, ValueError, OSError) as e:
            raise EditFormatError(f"{path}: not an anyedit edit history ({e})") from None
        return h
