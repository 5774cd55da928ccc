"""FT-L: constrained fine-tuning of MLP output projections on the new answer (paper baseline).

As in ROME's FT-L: Adam on the chosen layers' MLP output weights only, minimising the mean NLL of the
answer tokens given the prompt (teacher forcing, the whole answer at once: there are no hidden-state
targets, so chunking does not apply), with every weight kept within ``norm_constraint`` (L-infinity) of
its original value after each step (0 = unconstrained, FT-U). The result is a dense delta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import BackendConfig, check_int, check_number
from ..model.batching import pad_batch
from ..model.state import input_device, training
from ..model.weights import Delta, get_param
from .base import BackendOutput, EditContext, register_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FtConfig(BackendConfig):
    method: ClassVar[str] = "ft"
    uses_values: ClassVar[bool] = False
    lr: float = 5e-4
    steps: int = 25
    norm_constraint: float = 5e-5
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        c = type(self)
        check_number(c, "lr", self.lr)
        check_int(c, "steps", self.steps)
        check_number(c, "norm_constraint", self.norm_constraint, allow_zero=True)
        check_number(c, "weight_decay", self.weight_decay, allow_zero=True)


class FtBackend:
    def compute(self, ctx: EditContext) -> BackendOutput:
        cfg: FtConfig = ctx.backend_config
        model = ctx.model
        names = [ctx.spec.mlp_out_weight_name(layer) for layer in ctx.layers]
        params = [get_param(model, n) for n in names]
        device = input_device(model)
        ids, mask = pad_batch([p.ids for p in ctx.prepared], device)
        labels = torch.full_like(ids, -100)
        for i, (p, start) in enumerate(zip(ctx.prepared, ctx.answer_starts)):
            labels[i, start: len(p.ids)] = torch.tensor(p.ids[start:], device=device)
        losses: list[float] = []
        with training(model, params) as original:
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            for _ in range(cfg.steps):
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                       labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
                losses.append(loss.item())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.norm_constraint > 0:
                    with torch.no_grad():
                        for q, q0 in zip(params, original):
                            q.copy_(torch.clamp(q, q0 - cfg.norm_constraint, q0 + cfg.norm_constraint))
            with torch.no_grad():
                deltas = {n: Delta(dense=(q.detach() - q0).float()) for n, q, q0 in zip(names, params, original)}
        log.info("ft: answer NLL %.4f -> %.4f in %d steps", losses[0], losses[-1], len(losses))
        return BackendOutput(deltas, {"nll": losses})


register_backend("ft", FtBackend, FtConfig)
