"""FT-L: constrained fine-tuning of MLP output projections on the new answer (paper baseline).

As in ROME's FT-L: Adam on the chosen layers' MLP output weights only, minimising the mean NLL of the
answer tokens given the prompt (teacher forcing, the whole answer at once: there are no hidden-state
targets, so chunking does not apply), with every weight kept within ``norm_constraint`` (L-infinity) of
its original value after each step (0 = unconstrained, FT-U). The result is a dense delta.

Tuned fine-tuning (as FT-UKE: a strong baseline for long answers) adds what the other methods are told to keep:
with ``preserve_weight`` > 0 each step also takes the NLL of the model's own answers to ``preserve_batch`` drawn
preservation prompts (``EditConfig.preserve``, the same conversations UnKE keeps), and with ``stop_margin`` it stops
once every answer token is the argmax by that margin (checked every ``check_every`` steps).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import BackendConfig, check_int, check_number
from ..model.batching import pad_batch
from ..model.logits import argmax_margin
from ..model.state import input_device, training
from ..model.weights import Delta, get_param
from ..stats.preserve import preserve_prompt_ids
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
    preserve_weight: float = 0.0
    preserve_batch: int = 16
    stop_margin: float | None = None
    check_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        c = type(self)
        check_number(c, "lr", self.lr)
        check_int(c, "steps", self.steps)
        check_number(c, "norm_constraint", self.norm_constraint, allow_zero=True)
        check_number(c, "weight_decay", self.weight_decay, allow_zero=True)
        check_number(c, "preserve_weight", self.preserve_weight, allow_zero=True)
        check_int(c, "preserve_batch", self.preserve_batch)
        if self.stop_margin is not None:
            check_number(c, "stop_margin", self.stop_margin, allow_zero=True)
        check_int(c, "check_every", self.check_every)
        check_int(c, "seed", self.seed, minimum=0)


def _labelled(rows: list[list[int]], starts: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, mask, and labels that are -100 except on each row's tokens from its start on."""
    ids, mask = pad_batch(rows, device)
    labels = torch.full_like(ids, -100)
    for i, (row, start) in enumerate(zip(rows, starts)):
        labels[i, start: len(row)] = torch.tensor(row[start:], device=device)
    return ids, mask, labels


def _nll(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
         labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL of the labelled tokens, and the logits."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                           labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
    return loss, logits


class FtBackend:
    def compute(self, ctx: EditContext) -> BackendOutput:
        cfg: FtConfig = ctx.backend_config
        model = ctx.model
        names = [ctx.spec.mlp_out_weight_name(layer) for layer in ctx.layers]
        params = [get_param(model, n) for n in names]
        device = input_device(model)
        starts = ctx.answer_starts
        ids, mask, labels = _labelled([p.ids for p in ctx.prepared], starts, device)
        pres: list[tuple[list[int], int]] = []
        if cfg.preserve_weight > 0 and ctx.preserve_rows is not None:  # the model's own answers, after their prompt
            prompts = preserve_prompt_ids(ctx.tokenizer, ctx.config.preserve, ctx.config.prompt)
            pres = [(row, len(q)) for row, q in zip(ctx.preserve_rows(), prompts)]
        rng = random.Random(cfg.seed)
        losses: list[float] = []
        margin: float | None = None
        with training(model, params) as original:
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            for step in range(cfg.steps + 1):
                if step == cfg.steps and cfg.stop_margin is None:
                    break
                loss, logits = _nll(model, ids, mask, labels)
                if cfg.stop_margin is not None and (step % cfg.check_every == 0 or step == cfg.steps):
                    margin = min(argmax_margin(logits[i, s - 1: len(p.ids) - 1], ids[i, s: len(p.ids)])
                                 for i, (p, s) in enumerate(zip(ctx.prepared, starts)))
                    if margin >= cfg.stop_margin:
                        break
                if step == cfg.steps:
                    break
                losses.append(loss.item())
                if pres:
                    drawn = rng.sample(pres, min(cfg.preserve_batch, len(pres)))
                    loss = loss + cfg.preserve_weight * _nll(model, *_labelled([r for r, _ in drawn],
                                                                               [s for _, s in drawn], device))[0]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.norm_constraint > 0:
                    with torch.no_grad():
                        for q, q0 in zip(params, original):
                            q.copy_(torch.clamp(q, q0 - cfg.norm_constraint, q0 + cfg.norm_constraint))
            with torch.no_grad():
                deltas = {n: Delta(dense=(q.detach() - q0).float()) for n, q, q0 in zip(names, params, original)}
        log.info("ft: answer NLL %.4f -> %.4f in %d steps", losses[0] if losses else float("nan"),
                 losses[-1] if losses else float("nan"), len(losses))
        diagnostics: dict = {"nll": losses, "update_steps": len(losses)}
        if margin is not None:
            diagnostics.update(answer_margin=margin, reproduced=margin >= cfg.stop_margin)
        return BackendOutput(deltas, diagnostics)


register_backend("ft", FtBackend, FtConfig)
