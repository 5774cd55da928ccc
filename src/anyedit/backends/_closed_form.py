"""The multi-layer closed-form loop shared by MEMIT, AlphaEdit and ROME.

For each edited layer l (in order), with the keys recomputed after the previous layers' updates:
``R = (Z* - Z_cur) / (layers left)`` (or all of it, ``spread="greedy"``), ``dW_l = R^T S_l^T`` where the
subclass's :meth:`ClosedFormBackend.solve` gives ``S_l [d_ff, m]`` from the edited keys ``K_s`` and the
other keys of the same texts ``K_p``. Deltas are stored as exact low-rank factors; per-layer diagnostics
say how much of its share each layer realises.
"""

from __future__ import annotations

import logging

import torch

from ..model.trace import trace
from ..model.weights import apply_deltas, restore
from ._linalg import mlp_out_delta, split_keys
from .base import BackendOutput, EditContext

log = logging.getLogger(__name__)


def targets_and_anchors(ctx: EditContext) -> tuple[torch.Tensor, list[list[int]]]:
    z_star = torch.cat([v.targets for v in ctx.values])
    return z_star, [v.positions for v in ctx.values]


class ClosedFormBackend:
    """The multi-layer loop; subclasses change only :meth:`prepare` and :meth:`solve`."""

    def prepare(self, ctx: EditContext) -> None:
        """Load what :meth:`solve` needs (statistics, projectors) once per update."""

    def solve(self, ctx: EditContext, layer: int, k_s: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
        """``[d_ff, m]`` matrix S with ``dW = R^T S^T`` (keys are rows)."""
        raise NotImplementedError

    def compute(self, ctx: EditContext) -> BackendOutput:
        cfg = ctx.backend_config
        spec, model = ctx.spec, ctx.model
        z_star, anchors = targets_and_anchors(ctx)
        seqs = [p.ids for p in ctx.prepared]
        self.prepare(ctx)
        deltas, backups, per_layer, edited_keys = {}, [], [], {}
        z0_err = None
        try:
            for i, layer in enumerate(ctx.layers):
                traces = trace(model, spec, seqs, layer, ctx.value_layer)
                k_s, k_p, z_cur = split_keys(traces, anchors)
                z_star = z_star.to(z_cur.device)
                err = z_star - z_cur
                if z0_err is None:
                    z0_err = err.norm(dim=1)
                resid = err / (len(ctx.layers) - i) if getattr(cfg, "spread", "even") == "even" else err
                edited_keys[layer] = k_s.detach()
                solved = self.solve(ctx, layer, k_s, k_p)
                name = spec.mlp_out_weight_name(layer)
                delta = mlp_out_delta(spec, resid, solved)
                realised = (k_s.to(solved.dtype) @ solved) @ resid.to(solved.dtype)  # dW k_s, per edited key
                share = float(realised.norm() / resid.norm().clamp_min(1e-12))
                per_layer.append({"layer": layer, "remaining": float(err.norm(dim=1).mean()),
                                  "share_realised": share})
                log.info("layer %d: residual %.3f, this layer realises %.0f%% of its share",
                         layer, per_layer[-1]["remaining"], 100 * share)
                deltas[name] = delta
                backups.append(apply_deltas(model, {name: delta}))
            final = trace(model, spec, seqs, ctx.layers[-1], ctx.value_layer)
            z_fin = split_keys(final, anchors)[2]
            left = (z_star - z_fin).norm(dim=1)
        finally:
            for backup in reversed(backups):
                restore(model, backup)
        # aggregate over all edited positions (a per-row mean blows up in refinement rounds, where rows that
        # are already realised have an error near zero)
        realised = float(1 - left.norm() / z0_err.norm().clamp_min(1e-12))
        log.info("MEMIT realises %.1f%% of the target change at layer %d", 100 * realised, ctx.value_layer)
        return BackendOutput(deltas, {"per_layer": per_layer, "realised_fraction": realised,
                                      "target_error_before": z0_err.tolist(), "target_error_after": left.tolist()},
                             edited_keys=edited_keys)


