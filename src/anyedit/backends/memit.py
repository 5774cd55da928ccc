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
from typing import Any, ClassVar, Literal

import torch

from ..config import BackendConfig, _check_choice, _check_pos_float
from ..deltas import apply_deltas, restore
from ._linalg import mlp_out_delta, regularised_solve, split_keys, trace
from .base import BackendOutput, EditContext, register_backend

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


def targets_and_anchors(ctx: EditContext) -> tuple[torch.Tensor, list[list[int]]]:
    z_star = torch.cat([v.targets for v in ctx.values])
    return z_star, [v.positions for v in ctx.values]


class MemitBackend:
    def compute(self, ctx: EditContext) -> BackendOutput:
        cfg: MemitConfig = ctx.backend_config
        spec, model = ctx.spec, ctx.model
        z_star, anchors = targets_and_anchors(ctx)
        seqs = [p.ids for p in ctx.prepared]
        stats = ctx.stats(ctx.layers)
        chat = ctx.chat_stats(ctx.layers) if cfg.preserve_weight > 0 else None
        dtype = getattr(torch, cfg.solve_dtype)
        deltas, backup, per_layer = {}, {}, []
        z0_err = None
        try:
            for i, layer in enumerate(ctx.layers):
                traces = trace(model, spec, seqs, layer, ctx.value_layer)
                k_s, k_p, z_cur = split_keys(traces, anchors)
                z_star = z_star.to(z_cur.device)
                err = z_star - z_cur
                if z0_err is None:
                    z0_err = err.norm(dim=1)
                resid = err / (len(ctx.layers) - i) if cfg.spread == "even" else err
                solved = regularised_solve(stats[layer], k_s, k_p, cfg.mom2_weight, cfg.kp_weight, dtype,
                                           chat[layer] if chat else None, cfg.preserve_weight)
                name = spec.mlp_out_weight_name(layer)
                delta = mlp_out_delta(spec, resid, solved)
                realised = (k_s.to(solved.dtype) @ solved) @ resid.to(solved.dtype)  # dW k_s, per edited key
                share = float(realised.norm() / resid.norm().clamp_min(1e-12))
                per_layer.append({"layer": layer, "remaining": float(err.norm(dim=1).mean()),
                                  "share_realised": share})
                log.info("layer %d: residual %.3f, this layer realises %.0f%% of its share",
                         layer, per_layer[-1]["remaining"], 100 * share)
                deltas[name] = delta
                backup.update(apply_deltas(model, {name: delta}))
            final = trace(model, spec, seqs, ctx.layers[-1], ctx.value_layer)
            z_fin = split_keys(final, anchors)[2]
            left = (z_star - z_fin).norm(dim=1)
        finally:
            restore(model, backup)
        realised = float(1 - (left / z0_err.clamp_min(1e-12)).mean())
        log.info("MEMIT realises %.1f%% of the target change at layer %d", 100 * realised, ctx.value_layer)
        return BackendOutput(deltas, {"per_layer": per_layer, "realised_fraction": realised,
                                      "target_error_before": z0_err.tolist(), "target_error_after": left.tolist()})


register_backend("memit", MemitBackend, MemitConfig)
