"""What the edits already applied leave behind, for sequential (lifelong) editing.

Three things are kept, and each update method uses what it can: per layer the running sum ``K_prev^T K_prev`` over
every key an earlier edit was written at (AlphaEdit adds it to its system matrix, as the paper does and the
reference code forgot; MEMIT adds it to its key covariance with ``history_weight``); the token ids of the
earlier edits' texts (UnKE keeps the edited layer's output on them, so training for a new edit cannot undo an old
one); and, per text, the hidden-state targets its value search found (their layer, anchor positions and vectors),
which UnKE trains towards again in every later update, as a batch edit of all of them would. Pass the same
:class:`EditHistory` to each ``compute_edits`` call whose result you apply, or use an
:class:`~anyedit.editing.stack.EditStack`, which keeps each edit's share beside it. Stored as safetensors (without
``applied``, the earlier edits' summed weight changes, which each edit saves itself and a stack fills in).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import EditFormatError
from ..model.weights import Delta, add_deltas
from ..types import ValueTargets


class EditHistory:
    """Per layer ``sum k k^T`` over the edited keys recorded so far (float32, on the keys' device), and the
    token ids of every earlier edit text (``rows``)."""

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.n_keys: dict[int, int] = {}
        self.n_edits = 0
        self.rows: list[list[int]] = []
        self.starts: list[int] = []  # where each row's answer starts (its prompt length)
        self.targets: list[tuple[int, list[int], torch.Tensor] | None] = []  # per row: (layer, positions, vectors)
        # the earlier edits' weight changes, summed (in memory only: each edit saves its own), so that a method can
        # compare with the unedited model
        self.applied: dict[str, Delta] = {}

    def add(self, keys: dict[int, torch.Tensor], rows: list[list[int]] | None = None,
            starts: list[int] | None = None, values: list[ValueTargets] | None = None) -> None:
        """Record one edit's keys ``{layer: [m, d_ff]}``, the token ids of its edit texts, where each text's
        answer starts and (``values``, one per text, when the method searched any) the targets found for it."""
        rows = rows or []
        if len(starts or []) != len(rows):
            raise ValueError("an answer start is needed for every edit text")
        if values and len(values) != len(rows):
            raise ValueError("value targets are needed for every edit text, or for none")
        self.targets.extend([(v.layer, list(v.positions), v.targets.detach().float().cpu()) for v in values]
                            if values else [None] * len(rows))
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
        self.targets.extend(other.targets)
        self.add_applied(other.applied)
        self.n_edits += other.n_edits

    def add_applied(self, deltas: dict[str, Delta]) -> None:
        """Record weight changes that are applied to the model with this history's edits."""
        add_deltas(self.applied, deltas)

    def get(self, layer: int) -> torch.Tensor | None:
        return self.sums.get(layer)

    def live_rows(self, asked: Iterable[Sequence[int]] = ()) -> list[int]:
        """The rows whose answer still stands: all but those whose prompt (the same tokens) a later row or one of
        ``asked`` (the prompts of the edit being made) asks again, since that answer replaced theirs."""
        seen = {tuple(a) for a in asked}
        live = []
        for i in reversed(range(len(self.rows))):
            prompt = tuple(self.rows[i][: self.starts[i]])
            if prompt not in seen:
                live.append(i)
                seen.add(prompt)
        return live[::-1]

    def targets_at(self, layer: int) -> list[tuple[list[int], torch.Tensor] | None]:
        """Per row, its anchor positions and target vectors at ``layer`` (None where it has none there)."""
        return [(t[1], t[2]) if t is not None and t[0] == layer else None for t in self.targets]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {"n_edits": str(self.n_edits), "n_keys": json.dumps({str(k): v for k, v in self.n_keys.items()})}
        tensors = {f"layer.{k}": v.contiguous().cpu() for k, v in self.sums.items()}
        if self.rows:
            tensors["rows.ids"] = torch.tensor([t for r in self.rows for t in r], dtype=torch.int64)
            tensors["rows.lengths"] = torch.tensor([len(r) for r in self.rows], dtype=torch.int64)
            tensors["rows.starts"] = torch.tensor(self.starts, dtype=torch.int64)
            with_targets = [t for t in self.targets if t is not None]
            if with_targets:  # per row: its target layer (-1: none), how many anchors, then all positions/vectors
                tensors["rows.target_layers"] = torch.tensor([-1 if t is None else t[0] for t in self.targets])
                tensors["rows.target_counts"] = torch.tensor([0 if t is None else len(t[1]) for t in self.targets])
                tensors["rows.target_positions"] = torch.tensor([q for t in with_targets for q in t[1]],
                                                                dtype=torch.int64)
                tensors["rows.targets"] = torch.cat([t[2] for t in with_targets]).contiguous()
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
                h.targets = [None] * len(h.rows)
                if "rows.target_layers" in tensors:
                    h.targets = _split_targets(tensors, len(h.rows))
        except (KeyError, ValueError, OSError) as e:
            raise EditFormatError(f"{path}: not an anyedit edit history ({e})") from None
        return h


def _split_targets(tensors: dict[str, torch.Tensor], n_rows: int) -> list[tuple[int, list[int], torch.Tensor] | None]:
    layers, counts = tensors["rows.target_layers"].tolist(), tensors["rows.target_counts"].tolist()
    positions, vectors = tensors["rows.target_positions"].tolist(), tensors["rows.targets"]
    if len(layers) != n_rows or len(counts) != n_rows or sum(counts) != len(positions) or \
            vectors.shape[0] != len(positions):
        raise ValueError("the stored value targets do not match the stored texts")
    out: list[tuple[int, list[int], torch.Tensor] | None] = []
    at = 0
    for layer, n in zip(layers, counts):
        out.append(None if layer < 0 else (layer, positions[at: at + n], vectors[at: at + n]))
        at += n
    return out
