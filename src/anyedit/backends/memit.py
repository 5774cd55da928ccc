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
from typing import ClassVar, Literal

import torch

from ..config import BackendConfig, _check_choice, _check_pos_float
from ._closed_form import ClosedFormBackend
from ._linalg import regularised_solve, solve_dtype
from .base import EditContext, register_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemitConfig(BackendConfig):
    """``mom2_weight`` is lambda; ``kp_weight`` weights the same-text preservation term (0 = off).

    ``preserve_weight`` adds ``preserve_weight * E_chat[k k^T]`` over generic chat conversations
    (``EditConfig.preserve``) to the regulariser; 0 is the paper's update.
    ``spread``: MEMIT's ``"even"`` split asks layer i (of n) for ``1/(n - i)`` of the remaining change;
    ``"greedy"`` asks every layer for all of it (later layers then correct what earlier ones could not
    realise, so a regulariser that lets each layer realise only part of its target still gets close).
    """

    method: ClassVar[str] = "memit"
    mom2_weight: float = 15000.0
    kp_weight: float = 1.0
    preserve_weight: float = 0.0
    spread: Literal["even", "greedy"] = "even"
    solve_dtype: Literal["float32", "float64"] = "float64"

    def __post_init__(self) -> None:
        c = type(self)
        _check_pos_float(c, "mom2_weight", self.mom2_weight, allow_zero=True)
        _check_pos_float(c, "kp_weight", self.kp_weight, allow_zero=True)
        _check_pos_float(c, "preserve_weight", self.preserve_weight, allow_zero=True)
        _check_choice(c, "spread", self.spread, ("even", "greedy"))
        _check_choice(c, "solve_dtype", self.solve_dtype, ("float32", "float64"))


class MemitBackend(ClosedFormBackend):
    def prepare(self, ctx: EditContext) -> None:
        cfg = ctx.backend_config
        self.stats = ctx.stats(ctx.layers)
        self.chat = ctx.chat_stats(ctx.layers) if getattr(cfg, "preserve_weight", 0) > 0 else None

    def solve(self, ctx: EditContext, layer: int, k_s: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
        cfg: MemitConfig = ctx.backend_config
        return regularised_solve(self.stats[layer], k_s, k_p, cfg.mom2_weight, cfg.kp_weight,
                                 solve_dtype(cfg.solve_dtype, k_s.device), self.chat[layer] if self.chat else None,
                                 cfg.preserve_weight)


register_backend("memit", MemitBackend, MemitConfig)
