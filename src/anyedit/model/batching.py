"""Padding token-id rows into one batch: the single place every forward over several sequences pads."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def pad_batch(rows: Sequence[Sequence[int]], device: torch.device, pad: int = 0,
              left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded with ``pad`` to the longest row (on the right, or on the left for generation), and the
    attention mask (1 on each row's own tokens)."""
    if not rows:
        raise ValueError("pad_batch needs at least one row")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(list(r), dtype=torch.long, device=device)
        mask[i, sl] = 1
    return ids, mask
