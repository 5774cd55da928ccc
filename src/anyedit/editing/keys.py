"""Where an edit is cheap: how far a unit of weight change moves each position's output (chunk boundaries are
snapped to the cheapest keys)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..model.arch import ArchSpec
from ..model.trace import trace


def key_editability(model: nn.Module, spec: ArchSpec, sequences: Sequence[Sequence[int]], layer: int,
                    cov: torch.Tensor) -> list[list[float]]:
    """Per position of each sequence, ``k^T (C + eps I)^-1 k`` of its MLP key at ``layer``: how far a unit
    of weight change (measured by the key statistics ``C``) moves that position's output. Generic tokens,
    whose keys every text shares, score orders of magnitude lower than content tokens."""
    c = cov.double()
    eps = 1e-6 * float(c.diagonal().mean())
    chol = torch.linalg.cholesky(c + eps * torch.eye(c.shape[0], dtype=c.dtype, device=c.device))
    out = []
    for tr in trace(model, spec, sequences, layer, layer):
        k = tr.keys.to(c.device, torch.float64)
        w = torch.linalg.solve_triangular(chol, k.T, upper=False)  # L^-1 k
        out.append(w.pow(2).sum(0).tolist())
    return out
