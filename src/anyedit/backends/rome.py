"""ROME: rank-one model editing of one layer's MLP output projection (paper baseline).

ROME's closed form ``dW = (v* - W k*) (C^-1 k*)^T / (k*^T C^-1 k*)`` writes the key exactly with the
smallest change in the metric of ``C``. With several keys (one per chunk, ROME+) the same problem has
the solution ``dW = R^T X^T`` with ``X = C^-1 K^T (K C^-1 K^T)^-1`` (rank = number of keys); one key
gives ROME's formula. ``ridge`` adds ``ridge * tr(C)/d_ff * I`` to ``C`` for numerical safety.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import ClosedFormConfig, check_number
from ._closed_form import ClosedFormBackend
from ._linalg import solve_dtype
from .base import EditContext, register_backend


@dataclass(frozen=True)
class RomeConfig(ClosedFormConfig):
    method: ClassVar[str] = "rome"
    single_layer: ClassVar[bool] = True
    ridge: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(type(self), "ridge", self.ridge, allow_zero=True)


class RomeBackend(ClosedFormBackend):
    def prepare(self, ctx: EditContext) -> None:
        self.stats = ctx.stats(ctx.layers)

    def solve(self, ctx: EditContext, layer: int, k_s: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
        cfg: RomeConfig = ctx.backend_config
        dev = k_s.device
        dtype = solve_dtype(cfg.solve_dtype, dev)
        c = self.stats[layer].to(dev, dtype)
        c = c + cfg.ridge * (c.diagonal().mean()) * torch.eye(c.shape[0], device=dev, dtype=dtype)
        ks = k_s.to(dtype)
        cinv_k = torch.linalg.solve(c, ks.T)  # [d_ff, m]
        gram = ks @ cinv_k  # [m, m]
        return torch.linalg.solve(gram, cinv_k.T).T  # C^-1 K^T G^-1 (G symmetric)


register_backend("rome", RomeBackend, RomeConfig)
