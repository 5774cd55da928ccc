"""MEMIT: closed-form multi-layer update of the MLP output projection (paper Eq. 19, reference §5.1).

For each edited layer l (in order), with the keys recomputed after the previous layers' updates:
``R = (Z* - Z_cur) / (layers left)``, ``dW_l = R^T (lam C_l + w_p K_p^T K_p + K_s^T K_s)^-1 K_s`` where
K_s are the keys at the edited positions and K_p the keys at every other position of the edit texts
(the reference's extra term; ``kp_weight=0`` gives MEMIT's own update). The delta is stored as its
exact low-rank factors (rank = number of edited positions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import MultiLayerConfig, check_number
from ._closed_form import ClosedFormBackend
from ._linalg import regularised_solve, solve_dtype
from .base import EditContext, register_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemitConfig(MultiLayerConfig):
    """``mom2_weight`` is lambda. ``preserve_weight`` adds ``preserve_weight * E_chat[k k^T]`` over generic chat
    conversations to the regulariser (0 is the paper's update); the other fields: :class:`MultiLayerConfig`."""

    method: ClassVar[str] = "memit"
    mom2_weight: float = 15000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(type(self), "mom2_weight", self.mom2_weight, allow_zero=True)


class MemitBackend(ClosedFormBackend):
    def prepare(self, ctx: EditContext) -> None:
        cfg = ctx.backend_config
        self.stats = ctx.stats(ctx.layers)
        self.chat = ctx.chat_stats(ctx.layers) if cfg.preserve_weight > 0 else None

    def solve(self, ctx: EditContext, layer: int, k_s: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
        cfg: MemitConfig = ctx.backend_config
        prev = ctx.history.get(layer) if ctx.history is not None else None
        return regularised_solve(self.stats[layer], k_s, k_p, cfg.mom2_weight, cfg.kp_weight,
                                 solve_dtype(cfg.solve_dtype, k_s.device),
                                 [(cfg.preserve_weight, self.chat[layer] if self.chat else None),
                                  (cfg.history_weight, prev)])


register_backend("memit", MemitBackend, MemitConfig)
