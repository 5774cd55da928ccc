"""AlphaEdit: the MEMIT update projected onto the null space of the preserved keys (reference §5.4–5.6).

``P = U_0 U_0^T`` where ``U_0`` spans the eigenvectors of ``C = E[k k^T]`` with eigenvalue below
``nullspace_threshold`` (symmetric eigendecomposition, the basis cached with the statistics' key plus
the threshold; ``P`` itself is never materialised). Per layer, keys as rows:

``dW = R^T X^T``, ``X = (P (K_s^T K_s + w_p K_p^T K_p + K_prev^T K_prev) + alpha I)^-1 P K_s^T``

``K_prev^T K_prev`` is AlphaEdit's running sum over the keys of earlier edits (``EditHistory``), which the
AnyEdit reference dropped; it makes sequential edits protect the earlier ones. The multi-layer loop
(residual spread, per-layer diagnostics) is the one shared with MEMIT (``_closed_form``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import MultiLayerConfig, check_number
from ..errors import StatsError
from ._closed_form import ClosedFormBackend
from ._linalg import solve_dtype
from .base import EditContext, register_backend


@dataclass(frozen=True)
class AlphaEditConfig(MultiLayerConfig):
    """``l2`` is alpha (the reference's ``L2``); ``kp_weight`` the same-text term of AnyEdit's AlphaEdit_ARE.

    ``preserve_weight`` > 0 also protects the keys of generic chat conversations (``EditConfig.preserve``):
    the null space is that of ``C + preserve_weight * E_chat[k k^T]``.
    """

    method: ClassVar[str] = "alphaedit"
    nullspace_threshold: float = 2e-2
    l2: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        c = type(self)
        check_number(c, "nullspace_threshold", self.nullspace_threshold)
        check_number(c, "l2", self.l2)


class AlphaEditBackend(ClosedFormBackend):
    def prepare(self, ctx: EditContext) -> None:
        cfg: AlphaEditConfig = ctx.backend_config
        if ctx.null_basis is None:
            raise StatsError("alphaedit needs the null-space basis of the key statistics; none was provided")
        self.basis = ctx.null_basis(ctx.layers, cfg.nullspace_threshold, cfg.preserve_weight)
        empty = [layer for layer, u in self.basis.items() if u.shape[1] == 0]
        if empty:
            raise StatsError(f"alphaedit: the key statistics of layers {empty} have no eigenvalue below "
                             f"nullspace_threshold={cfg.nullspace_threshold}; raise it (--set "
                             "backend.nullspace_threshold=...)")

    def solve(self, ctx: EditContext, layer: int, k_s: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
        cfg: AlphaEditConfig = ctx.backend_config
        dev = k_s.device
        dtype = solve_dtype(cfg.solve_dtype, dev)
        u = self.basis[layer].to(dev, dtype)  # [d_ff, n0]
        ks = k_s.to(dtype)
        a = ks.T @ ks
        if cfg.kp_weight > 0 and k_p.shape[0]:
            kp = k_p.to(dtype)
            a = a + cfg.kp_weight * (kp.T @ kp)
        prev = ctx.history.get(layer) if ctx.history is not None else None
        if prev is not None and cfg.history_weight > 0:
            a = a + cfg.history_weight * prev.to(dev, dtype)
        system = u @ (u.T @ a)  # P A without forming P
        system.diagonal().add_(cfg.l2)
        rhs = u @ (u.T @ ks.T)  # P K_s^T
        return torch.linalg.solve(system, rhs)


register_backend("alphaedit", AlphaEditBackend, AlphaEditConfig)
