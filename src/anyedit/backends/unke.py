"""UnKE / AnyEdit*: train every parameter of one decoder layer (paper Eq. 21, reference §5.7).

The layer is trained so that its output at the edited positions becomes the searched targets, while its
output at every other position of the edit texts and of the preservation conversations (generic chat
prompts with the model's own answers, ``EditConfig.preserve``) stays as it was. Padding is masked out.

The layer is always called through the model's own forward: the layers below it replay their stored
output (``hooks.replayed_layers``) and the pass stops right after it, so rotary embeddings, attention
masks and sliding windows come from the model itself, for any architecture.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import BackendConfig, EditConfig, check_bool, check_choice, check_int, check_number
from ..errors import UnsupportedArchitectureError
from ..model.arch import ArchSpec, get_spec
from ..model.batching import pad_batch
from ..model.hooks import capture, replayed_layers, stop_after
from ..model.logits import argmax_margin
from ..model.state import input_device, training
from ..model.weights import Delta, undone
from .base import BackendOutput, EditContext, register_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnkeConfig(BackendConfig):
    """AdamW on all parameters of the edited layer.

    Loss = ``edit_weight * MSE(anchors -> targets) + kp_weight * MSE(other edit positions -> unchanged)
    + preserve_weight * MSE(preservation conversations -> unchanged)``, each a mean over its own positions.
    ``preserve_batch`` conversations are sampled per step (seeded). Stops early when the anchor error is
    below ``tol`` times its starting value, or (``stop_margin`` set) as soon as the edited model reproduces every
    edit text: each answer token, teacher-forced, is the argmax by at least ``stop_margin`` in log-probability
    (so greedy decoding returns the answer), checked every ``check_every`` steps. An update that stops that way
    reports ``reproduced`` and no further refinement round is run. (``kp_weight`` keeps the other positions of the
    edit texts, as the same-named term of MEMIT and AlphaEdit; configs that call it ``keep_weight``, its earlier
    name, still load.)

    In sequential editing (an ``EditHistory`` or ``EditStack``), the texts of the edits applied before are kept
    too: ``history_weight * MSE(their layer outputs -> unchanged)`` over ``history_batch`` of them drawn per step,
    so training the layer for a new answer does not undo the earlier ones (an earlier text asking exactly what
    the new edit asks is not kept: the new answer replaces it); at their anchors the layer is trained
    towards the targets their own value search found (``replay_weight * MSE(their anchors -> their targets)``, a
    mean over the anchors of the texts drawn, as a batch edit of all of them would), so what later edits wear away
    is restored instead of merely slowed (``replay_weight`` 0: their anchors are kept as they are now, like the
    other positions). The preservation conversations are kept as the unedited model has them
    (``preserve_unedited``; False: as the earlier edits left them), so locality does not drift edit by edit.
    With ``stop_margin`` set, the update
    then also stops only once no earlier answer has lost margin below ``min(history_margin, its margin when the
    update began)`` (checked when the new answer passes; ``history_margin`` None: ``stop_margin``). A lower
    ``history_margin`` than ``stop_margin`` asks each new answer for a wide margin without making every later update
    hold all the earlier answers by as much. ``history_adapt`` > 0 makes those floors constraints the update
    works towards, not only a stopping test: the earlier answers are checked every ``check_every`` steps, and each
    one below its floor has its weight (on its kept positions and its replayed anchors) multiplied by
    ``1 + history_adapt`` (up to 64; the weights carry over to the edit's later rounds) and is drawn on every step.
    ``edit_adapt`` > 0 does the same for the edit's own texts (with ``stop_margin``): in an edit of several requests
    (a batch), each text whose answer is below ``stop_margin`` at a check has the weight of its anchors multiplied
    by ``1 + edit_adapt`` (up to 64 times the others', kept over the edit's rounds), the weights then rescaled so
    that the mean over all anchor positions stays 1: the edit term keeps its total and shifts it towards the answers
    still short, so that one update does not settle the answers that come easily and leave the hard ones.

    ``check_slack`` (None: off) makes those checks cheaper when there are many answers to check (a batch, a long
    stack), where running the layers above over every answer at every check costs as much as the training steps:
    an answer whose margin was above its floor (``stop_margin``, or an earlier answer's floor) by at least
    ``check_slack`` when last measured is measured again only every fifth check, or when every other answer passes,
    so the update still stops only on margins of the weights it stops with. With ``edit_adapt`` and
    ``history_adapt`` off, the update runs exactly as without it; with them, an answer that falls from well above its
    floor has its weight raised at most a few checks later.

    ``weight_decay`` pulls the layer's matrices towards zero each step (AdamW, as the reference) with ``decay_to``
    "zero", or towards the weights the update began from with "start": the same decoupled decay, applied to the
    change only, so a long run of edits does not shrink the layer step by step.

    ``train="mlp"`` trains only the layer's MLP. The MLP sees each position on its own, so its inputs are recorded
    once and every step runs just the MLP: over the edit texts, and over ``preserve_tokens`` positions drawn from all
    preservation conversations (0: every position of ``preserve_batch`` drawn conversations). Not for architectures
    with a norm after the MLP (Gemma 2/3), where the layer output is not the MLP output plus a fixed residual.
    """

    method: ClassVar[str] = "unke"
    single_layer: ClassVar[bool] = True
    value_at_edited_layer: ClassVar[bool] = True
    lr: float = 1e-3
    steps: int = 100
    weight_decay: float = 0.01
    decay_to: str = "zero"
    edit_weight: float = 1.0
    kp_weight: float = 1.0
    preserve_weight: float = 1.0
    preserve_batch: int = 16
    tol: float = 0.0
    stop_margin: float | None = None
    check_every: int = 5
    check_slack: float | None = None
    train: str = "layer"
    preserve_tokens: int = 0
    history_weight: float = 1.0
    history_batch: int = 8
    history_margin: float | None = None
    replay_weight: float = 1.0
    history_adapt: float = 0.0
    edit_adapt: float = 0.0
    preserve_unedited: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        c = type(self)
        check_number(c, "lr", self.lr)
        check_int(c, "steps", self.steps)
        for name in ("weight_decay", "edit_weight", "kp_weight", "preserve_weight", "tol"):
            check_number(c, name, getattr(self, name), allow_zero=True)
        check_int(c, "preserve_batch", self.preserve_batch)
        if self.stop_margin is not None:
            check_number(c, "stop_margin", self.stop_margin, allow_zero=True)
        check_int(c, "check_every", self.check_every)
        if self.check_slack is not None:
            check_number(c, "check_slack", self.check_slack, allow_zero=True)
        check_choice(c, "train", self.train, ("layer", "mlp"))
        check_choice(c, "decay_to", self.decay_to, ("zero", "start"))
        check_int(c, "preserve_tokens", self.preserve_tokens, minimum=0)
        check_number(c, "history_weight", self.history_weight, allow_zero=True)
        check_int(c, "history_batch", self.history_batch)
        if self.history_margin is not None:
            check_number(c, "history_margin", self.history_margin, allow_zero=True)
        check_number(c, "replay_weight", self.replay_weight, allow_zero=True)
        check_number(c, "history_adapt", self.history_adapt, allow_zero=True)
        check_number(c, "edit_adapt", self.edit_adapt, allow_zero=True)
        check_bool(c, "preserve_unedited", self.preserve_unedited)
        check_int(c, "seed", self.seed, minimum=0)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "UnkeConfig":
        if isinstance(data, dict) and "keep_weight" in data:  # its earlier name (saved edits, runs)
            data = {("kp_weight" if k == "keep_weight" else k): v for k, v in data.items()}
        return super().from_dict(data)


class _LayerIO:
    """Inputs and outputs of one decoder layer over a padded batch, and a differentiable re-run."""

    def __init__(self, model: nn.Module, ctx: EditContext, layer: int, rows: list[list[int]],
                 mlp: str | None = None, starts: list[int] | None = None) -> None:
        self.model, self.layer = model, layer
        self.spans = [(s, len(r)) for s, r in zip(starts, rows)] if starts is not None else None  # answer tokens
        self.layers = model.get_submodule(ctx.spec.layers)
        self.path = ctx.spec.layer_path(layer)
        self.ids, self.mask = pad_batch(rows, input_device(model))
        paths = [self.path] + ([mlp] if mlp else [])
        with torch.no_grad(), capture(model, inputs=paths, outputs=paths) as rec, stop_after(self.layers[layer]):
            model(input_ids=self.ids, attention_mask=self.mask, use_cache=False)
        self.inputs, self.outputs = rec.inputs[self.path], rec.outputs[self.path]
        # with ``mlp``: the MLP's own input and output (the layer output is the MLP output plus a fixed residual)
        self.mlp_in, self.mlp_out = (rec.inputs[mlp], rec.outputs[mlp]) if mlp else (None, None)

    def run(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output (with its current parameters) on all rows, or on the selected ``rows``."""
        ids, mask, inp = self.ids, self.mask, self.inputs
        if rows is not None:
            ids, mask, inp = ids[rows], mask[rows], inp[rows]
        with capture(self.model, outputs=[self.path], detach=False) as rec, stop_after(self.layers[self.layer]):
            if self.layer > 0:
                with replayed_layers(self.layers, self.layer - 1, inp):
                    self.model(input_ids=ids, attention_mask=mask, use_cache=False)
            else:
                self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return rec.outputs[self.path]

    @torch.no_grad()
    def answer_margins(self, out: torch.Tensor, rows: list[int] | None = None) -> list[float]:
        """Per row (all, or the ``rows`` given, whose layer output ``out`` then is), the smallest argmax margin of
        its answer tokens, with this layer's output ``out`` replayed and the layers above it run by the model's own
        forward."""
        ids, mask, spans = self.ids, self.mask, self.spans
        if rows is not None:
            sel = torch.tensor(rows, device=ids.device)
            ids, mask, spans = ids[sel], mask[sel], [spans[i] for i in rows]
        with replayed_layers(self.layers, self.layer, out.detach()):
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return [argmax_margin(logits[b, s - 1: n - 1], ids[b, s: n]) for b, (s, n) in enumerate(spans)]


_FULL_CHECK_EVERY = 5  # with ``check_slack``: every row is measured again at every this many-th check


class _LazyMargins:
    """Per-row answer margins against a floor per row, measured again lazily (``check_slack``).

    At a check, only the rows whose margin was within ``slack`` of their floor when last measured (or never
    measured) are measured again, and every row at every ``_FULL_CHECK_EVERY``-th check. With ``confirm``, when
    every row is at or above its floor by what is known, the rows not measured this time are measured too, so that
    a decision that all rows pass is always made on margins of the current weights: the slack only spares rows
    while the update goes on anyway. ``slack`` None: every row at every check."""

    def __init__(self, floors: list[float], slack: float | None) -> None:
        self.floors, self.slack = floors, slack
        self.last: list[float | None] = [None] * len(floors)
        self.checks = self.measured = self.possible = 0

    def measure(self, fn: Any, confirm: bool = True) -> list[float]:
        """The margins after this check; ``fn(rows)`` measures ``rows`` (None: all rows, in order)."""
        n = len(self.floors)
        full = self.slack is None or self.checks % _FULL_CHECK_EVERY == 0
        self.checks += 1
        self.possible += n
        close = [i for i, (m, f) in enumerate(zip(self.last, self.floors))
                 if full or m is None or m - f < self.slack]
        self._fill(fn, close)
        measured = set(close)
        rest = [i for i in range(n) if i not in measured]
        if confirm and rest and all(m >= f for m, f in zip(self.last, self.floors)):
            self._fill(fn, rest)
        return list(self.last)  # every entry measured at least once: the first check measures all

    def _fill(self, fn: Any, rows: list[int]) -> None:
        if not rows:
            return
        got = fn(None if len(rows) == len(self.floors) else rows)
        for i, m in zip(rows, got):
            self.last[i] = m
        self.measured += len(rows)


_MAX_ADAPT_WEIGHT = 64.0  # how far ``history_adapt`` raises an earlier answer's weight (``edit_adapt``: a text's)


def _raise_weights(w: torch.Tensor, which: list[bool], factor: float, cap: float) -> None:
    """Multiply the weights ``w[which]`` by ``factor`` in place, up to ``cap``."""
    sel = torch.tensor(which, dtype=torch.bool)
    w[sel] = (w[sel] * factor).clamp(max=cap)


def _rows(io: _LayerIO, rows: list[int] | None) -> torch.Tensor | None:
    """Row indices of ``io`` as a tensor on its device (None: all rows)."""
    return None if rows is None else torch.tensor(rows, device=io.ids.device)


def _mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the positions in ``mask``; ``rows``: a weight per row (the mean still divides by
    the number of positions, so weights of 1 change nothing)."""
    m = mask.to(torch.float32)
    w = m if rows is None else m * rows.to(m.device, torch.float32)[:, None]
    return (((a.float() - b.float()) ** 2).mean(-1) * w).sum() / m.sum().clamp_min(1)


def _targets(io: _LayerIO, anchors: list[tuple[list[int], torch.Tensor] | None]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """What the layer output should be on ``io``'s rows: ``anchors[b]`` (positions, vectors) set on row ``b``, its
    current output elsewhere (float32); and the mask of those anchor positions."""
    target = io.outputs.clone().float()
    mask = torch.zeros_like(io.mask, dtype=torch.bool)
    for b, a in enumerate(anchors):
        if a is not None and len(a[0]):
            pos = torch.tensor(a[0], device=target.device)
            target[b, pos] = a[1].to(target.device, torch.float32)
            mask[b, pos] = True
    return target, mask


def _mlp_path(spec: ArchSpec, layer: int) -> str:
    """The MLP module of a decoder layer: the parent of its output projection."""
    return spec.mlp_out_path(layer).rsplit(".", 1)[0]


class UnkeBackend:
    def __init__(self) -> None:
        self.history_floor: list[float] | None = None  # set by the first round of an edit, kept by later ones
        self.history_weights: torch.Tensor | None = None  # per earlier answer (``history_adapt``), likewise
        self.edit_weights: torch.Tensor | None = None  # per edit text (``edit_adapt``), likewise

    def check(self, model: nn.Module, config: EditConfig) -> None:
        spec = get_spec(model)
        if config.backend.train == "mlp" and spec.mlp_post_norm:
            raise UnsupportedArchitectureError(
                f"backend.train='mlp' needs the layer output to be the MLP output plus a fixed residual; "
                f"{spec.model_type} has a norm after the MLP: use backend.train='layer'")

    def prepare(self, ctx: EditContext) -> None:
        """The preservation conversations (prompt + the model's own answer) when ``preserve_weight`` > 0."""
        cfg: UnkeConfig = ctx.backend_config
        use = cfg.preserve_weight > 0 and ctx.preserve_rows is not None
        self.preserve = ctx.preserve_rows() if use else None

    def compute(self, ctx: EditContext) -> BackendOutput:
        cfg: UnkeConfig = ctx.backend_config
        self.check(ctx.model, ctx.config)
        (layer,) = ctx.layers  # one layer, and the value layer equal to it: checked by config.check_layers
        model = ctx.model
        mlp = _mlp_path(ctx.spec, layer) if cfg.train == "mlp" else None
        prefix = mlp or ctx.spec.layer_path(layer)
        module = model.get_submodule(prefix)
        edit = _LayerIO(model, ctx, layer, [p.ids for p in ctx.prepared], mlp, ctx.answer_starts)
        target, anchor_mask = _targets(edit, [(v.positions, v.targets) for v in ctx.values])
        keep_mask = edit.mask.bool() & ~anchor_mask
        self.prepare(ctx)
        pres = None
        if self.preserve is not None:  # kept as the unedited model has them, not as earlier edits left them
            applied = ctx.history.applied if ctx.history is not None and cfg.preserve_unedited else {}
            with undone(model, applied):
                pres = _LayerIO(model, ctx, layer, self.preserve, mlp)
        rng = random.Random(cfg.seed)

        use = ctx.history is not None and cfg.history_weight > 0
        kept = ctx.history.live_rows([p.ids[:s] for p, s in zip(ctx.prepared, ctx.answer_starts)]) if use else []
        hist_rows = [ctx.history.rows[i] for i in kept]
        hist = _LayerIO(model, ctx, layer, hist_rows, mlp, [ctx.history.starts[i] for i in kept]) if kept else None
        if hist is not None:  # the earlier edits' own targets at their anchors (replayed), their outputs elsewhere
            at_layer = ctx.history.targets_at(layer) if cfg.replay_weight > 0 else []
            replayed = [at_layer[i] for i in kept] if at_layer else []
            hist_target, hist_anchors = _targets(hist, replayed)
            hist_keep = hist.mask.bool() & ~hist_anchors
        hist_margin: float | None = None
        if hist is not None and cfg.stop_margin is not None and self.history_floor is None:
            # what each earlier answer's margin must stay above: as the first round found them, so a later round
            # (on the model with this edit's first update applied) cannot accept what that update broke
            cap = cfg.stop_margin if cfg.history_margin is None else cfg.history_margin
            self.history_floor = [min(m, cap) for m in hist.answer_margins(hist.outputs)]
        adapt = hist is not None and cfg.stop_margin is not None and cfg.history_adapt > 0
        if hist is not None and self.history_weights is None:
            self.history_weights = torch.ones(len(hist_rows))
        own_check = _LazyMargins([cfg.stop_margin or 0.0] * edit.ids.shape[0], cfg.check_slack)
        hist_check = _LazyMargins(self.history_floor, cfg.check_slack) \
            if hist is not None and cfg.stop_margin is not None else None
        edit_adapt = cfg.stop_margin is not None and cfg.edit_adapt > 0
        if edit_adapt:
            if self.edit_weights is None:
                self.edit_weights = torch.ones(edit.ids.shape[0])
            per_row = anchor_mask.sum(1).float().cpu()  # anchor positions per edit text

        def layer_output(io: _LayerIO, sel: torch.Tensor | None = None) -> torch.Tensor:
            """The layer output on all rows of ``io``, or on the rows ``sel``."""
            if mlp is None:
                return io.run(sel)
            o, i, m = (io.outputs, io.mlp_in, io.mlp_out) if sel is None else \
                (io.outputs[sel], io.mlp_in[sel], io.mlp_out[sel])
            return o + (module(i) - m)  # only the MLP's share changes

        def draw(io: _LayerIO, batch: int, always: list[int] | None = None) -> torch.Tensor:
            """The rows ``always``, then as many more of ``io``'s rows drawn at random as make ``batch`` (all when
            fewer)."""
            always = always or []
            rest = [i for i in range(io.ids.shape[0]) if i not in always]
            pick = always + rng.sample(rest, max(0, min(batch - len(always), len(rest))))
            return torch.tensor(pick, device=io.ids.device)

        def kept_loss(io: _LayerIO, batch: int) -> torch.Tensor:
            """The change of the layer output over ``batch`` rows of ``io`` drawn at random."""
            sel = draw(io, batch)
            if mlp is None:
                return _mse(io.run(sel), io.outputs[sel], io.mask[sel].bool())
            return _mse(module(io.mlp_in[sel]), io.mlp_out[sel], io.mask[sel].bool())

        def history_loss() -> torch.Tensor:
            """The earlier edit texts drawn this step (those whose weight ``history_adapt`` raised always):
            kept (``history_weight``), their anchors replayed (``replay_weight``), each by its own weight."""
            sel = draw(hist, cfg.history_batch, [i for i, w in enumerate(self.history_weights.tolist()) if w > 1])
            out_h, w = layer_output(hist, sel), self.history_weights[sel.cpu()]
            loss = cfg.history_weight * _mse(out_h, hist_target[sel], hist_keep[sel], w)
            if hist_anchors[sel].any():
                loss = loss + cfg.replay_weight * _mse(out_h, hist_target[sel], hist_anchors[sel], w)
            return loss

        if pres is not None and mlp is not None and cfg.preserve_tokens:
            valid = pres.mask.bool()
            flat_in, flat_out = pres.mlp_in[valid], pres.mlp_out[valid]

        def preserve_loss() -> torch.Tensor:
            if mlp is None or not cfg.preserve_tokens:
                return kept_loss(pres, cfg.preserve_batch)
            idx = rng.sample(range(flat_in.shape[0]), min(cfg.preserve_tokens, flat_in.shape[0]))
            sel = torch.tensor(idx, device=flat_in.device)
            return (module(flat_in[sel]).float() - flat_out[sel].float()).pow(2).mean()

        params = dict(module.named_parameters())
        decay = [p for n, p in params.items() if p.ndim >= 2]
        no_decay = [p for n, p in params.items() if p.ndim < 2]
        history: list[float] = []
        with training(model, list(params.values())) as original:
            to_zero = cfg.weight_decay if cfg.decay_to == "zero" else 0.0
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": to_zero},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
            start_of = {id(p): p0 for p, p0 in zip(params.values(), original)}
            to_start = [(p, start_of[id(p)]) for p in decay] if cfg.decay_to == "start" and cfg.weight_decay else []
            start_err = None
            margin: float | None = None
            steps = 0
            for step in range(cfg.steps + 1):
                last = step == cfg.steps
                if last and cfg.stop_margin is None:
                    break
                out = layer_output(edit)
                if cfg.stop_margin is not None and (step % cfg.check_every == 0 or last):
                    own = own_check.measure(
                        lambda rows: edit.answer_margins(out if rows is None else out[_rows(edit, rows)], rows))
                    margin = min(own)
                    if edit_adapt:
                        w = self.edit_weights
                        _raise_weights(w, [m < cfg.stop_margin for m in own], 1 + cfg.edit_adapt,
                                       _MAX_ADAPT_WEIGHT * w.min().item())
                        w *= per_row.sum() / (w * per_row).sum()  # the edit term's total weight unchanged
                    if hist is not None and (margin >= cfg.stop_margin or adapt):
                        with torch.no_grad():
                            now = hist_check.measure(
                                lambda rows: hist.answer_margins(layer_output(hist, _rows(hist, rows)), rows),
                                confirm=margin >= cfg.stop_margin)
                        below = [m - f for m, f in zip(now, self.history_floor)]
                        hist_margin = min(below)
                        margin = min(margin, cfg.stop_margin + hist_margin)  # passes only if both hold
                        if adapt:
                            _raise_weights(self.history_weights, [b < 0 for b in below], 1 + cfg.history_adapt,
                                           _MAX_ADAPT_WEIGHT)
                    if margin >= cfg.stop_margin or last:
                        break
                l_edit = _mse(out, target, anchor_mask, self.edit_weights if edit_adapt else None)
                l_keep = _mse(out, edit.outputs, keep_mask)
                loss = cfg.edit_weight * l_edit + cfg.kp_weight * l_keep
                if pres is not None:
                    loss = loss + cfg.preserve_weight * preserve_loss()
                if hist is not None:
                    loss = loss + history_loss()
                start_err = start_err if start_err is not None else l_edit.item()
                history.append(l_edit.item())
                if cfg.tol > 0 and l_edit.item() < cfg.tol * start_err:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if to_start:  # AdamW's decoupled decay, on the change since the update began
                    with torch.no_grad():
                        for p, p0 in to_start:
                            p.sub_(p - p0, alpha=cfg.lr * cfg.weight_decay)
                steps += 1
            with torch.no_grad():
                deltas = {f"{prefix}.{n}": Delta(dense=(p.detach() - p0).float())
                          for (n, p), p0 in zip(params.items(), original)}
                final = _mse(layer_output(edit), target, anchor_mask).item()
        realised = 1 - (final / history[0]) ** 0.5 if history and history[0] > 0 else 1.0
        log.info("unke: anchor error %.4f -> %.4f in %d steps (%.0f%% of the change realised)%s",
                 history[0] if history else 0, final, steps, 100 * realised,
                 "" if margin is None else f"; answer margin {margin:.2f}")
        diagnostics: dict[str, Any] = {"anchor_mse": history, "anchor_mse_final": final,
                                       "realised_fraction": realised, "update_steps": steps}
        if margin is not None:
            diagnostics.update(answer_margin=margin, reproduced=margin >= cfg.stop_margin)
        if hist is not None:
            diagnostics.update(history_texts=len(hist_rows))
            if hist_margin is not None:  # the smallest loss of margin below its floor, over the earlier answers
                diagnostics.update(history_margin_vs_floor=hist_margin)
            if adapt:
                diagnostics.update(history_weights=[round(w, 2) for w in self.history_weights.tolist()])
        if cfg.check_slack is not None:  # answer margins measured, of those a check of every row would have
            checks = [c for c in (own_check, hist_check) if c is not None]
            diagnostics.update(margins_measured=[sum(c.measured for c in checks), sum(c.possible for c in checks)])
        if edit_adapt:
            diagnostics.update(edit_weights=[round(w, 2) for w in self.edit_weights.tolist()])
        return BackendOutput(deltas, diagnostics)


register_backend("unke", UnkeBackend, UnkeConfig)
