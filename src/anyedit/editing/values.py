"""Paper Step 3 (Eq. 9): optimise one residual-stream vector per chunk.

For chunk k, a vector ``delta_k`` is added to the output of decoder layer ``z`` at the chunk's anchor
position, with the vectors of chunks ``< k`` already applied, and optimised so that the model
generates the chunk's tokens given the prompt and the previous chunks.

With ``ValueConfig.joint`` all chunks' vectors are optimised at once, in one pass over the whole answer per step
(the sum of the chunks' losses; a chunk that is done holds its vectors while the others move), so every vector
also sees the later chunks' losses. Otherwise each chunk is optimised in turn. Two exact implementations of a
step:

* ``cache_prefix=True`` (default). ``delta_k`` cannot change (a) anything before the anchor, nor
  (b) layers ``0..z`` anywhere. So once per chunk we run the prefix before the anchor (with the earlier
  vectors applied) and keep its key/value cache, and run layers ``0..z`` over the chunk's positions
  and keep their output. Each optimisation step then runs only layers ``z+1..L-1`` over the chunk's
  positions (the lower layers replay their stored output) and the LM head only where there are labels.
* ``cache_prefix=False``: recompute the whole model over the whole sequence every step (the reference's
  way; kept for checking and benchmarking).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config import ValueConfig
from ..model.arch import ArchSpec
from ..model.hooks import add_to_output, capture, replayed_layers, stop_after
from ..model.logits import argmax_margin
from ..model.state import eval_mode, frozen, input_device
from ..types import Chunk, ChunkReport, ValueTargets

__all__ = ["ValueCache", "argmax_margin", "search_values"]

log = logging.getLogger(__name__)


class ValueCache:
    """Memoises value searches across ``compute_edits`` calls (e.g. comparing backends on the same values).

    An entry is keyed by a checksum of every parameter of the model (so an applied edit invalidates it), the
    token ids, the chunks' anchors, the layer and the value config.
    """

    def __init__(self) -> None:
        self._store: dict[tuple, ValueTargets] = {}
        self.hits = 0

    @staticmethod
    @torch.no_grad()
    def fingerprint(model: nn.Module) -> str:
        import hashlib

        h = hashlib.sha256()
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1).double()
            ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
            h.update(name.encode())
            h.update(torch.stack([flat.sum(), (flat * ramp).sum(), flat.abs().max()]).cpu().numpy().tobytes())
        return h.hexdigest()

    def key(self, fingerprint: str, ids: Sequence[int], prompt_len: int, chunks: Sequence[Chunk], layer: int,
            cfg: ValueConfig) -> tuple:
        """Everything :func:`search_values` depends on (``prompt_len`` places the chunks' targets in ``ids``)."""
        import json

        return (fingerprint, tuple(ids), prompt_len, tuple(tuple(c.anchors) + (c.start, c.end) for c in chunks),
                layer, json.dumps(cfg.to_dict(), sort_keys=True))

    def get(self, key: tuple) -> ValueTargets | None:
        hit = self._store.get(key)
        self.hits += hit is not None
        return hit

    def put(self, key: tuple, value: ValueTargets) -> None:
        self._store[key] = value


def _forward_kwargs(model: nn.Module) -> dict[str, str]:
    """Names of the cache and logits-slicing arguments of this model's forward (they moved across versions)."""
    params = inspect.signature(model.forward).parameters
    names = {"cache": "cache" if "cache" in params else "past_key_values"}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names["keep"] = "logits_to_keep" if ("logits_to_keep" in params or has_var_kw) else ""
    return names


def _output_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def search_values(model: nn.Module, spec: ArchSpec, ids: Sequence[int], prompt_len: int,
                  chunks: Sequence[Chunk], layer: int, cfg: ValueConfig,
                  progress: Any | None = None, anchor_weights: dict[int, float] | None = None,
                  init: Sequence[torch.Tensor | None] | None = None) -> ValueTargets:
    """Optimise the vectors of all chunks of one request (in order, or all at once with ``cfg.joint``). The
    model is not modified.

    ``anchor_weights`` (optional, position -> weight) scales the weight decay of individual anchors, so that
    a chunk with several anchors puts its change where it is cheap. ``init`` (optional, per chunk) starts
    a chunk's vectors from the given ``[n_anchors, hidden]`` tensor instead of zero (warm start).
    """
    device = input_device(model)
    seq = torch.tensor([list(ids)], device=device)
    layer_path = spec.layer_path(layer)
    make_step = _cached_step if cfg.cache_prefix else _full_step

    def weights_of(anchors: Sequence[int], on: torch.device) -> torch.Tensor:
        return torch.tensor([(anchor_weights or {}).get(a, 1.0) for a in anchors], device=on)

    def init_of(k: int, n: int) -> torch.Tensor | None:
        d = None if init is None else init[k]
        return d if d is not None and d.shape[0] == n else None

    reports: list[ChunkReport] = []
    with eval_mode(model), frozen(model):
        if cfg.joint and len(chunks) > 1:
            t0 = time.perf_counter()
            union = Chunk(start=chunks[0].start, end=max(c.end for c in chunks),
                          anchors=tuple(a for c in chunks for a in c.anchors))
            last = prompt_len + union.end - 2
            labels = seq[0, prompt_len + union.start: last + 2]
            step_fn, h = make_step(model, seq, layer_path, layer, spec, union, last, ([], None), len(labels))
            groups, row = [], 0
            for c in chunks:
                groups.append((slice(row, row + len(c.anchors)), slice(c.start - union.start, c.end - union.start)))
                row += len(c.anchors)
            inits = [init_of(k, len(c.anchors)) for k, c in enumerate(chunks)]
            start = None if all(d is None for d in inits) else torch.cat(
                [d.to(h) if d is not None else h.new_zeros(len(c.anchors), h.shape[1])
                 for d, c in zip(inits, chunks)])
            delta, reps = _optimise(step_fn, h, labels, cfg, weights_of(union.anchors, h.device), start, groups)
            secs = (time.perf_counter() - t0) / len(chunks)
            for c, rep in zip(chunks, reps):
                reports.append(ChunkReport(start=c.start, end=c.end, anchors=list(c.anchors), seconds=secs, **rep))
            if progress is not None:
                progress.update(len(chunks))
            h_all, d_all, positions = h, delta, list(union.anchors)
        else:
            h_rows: list[torch.Tensor] = []
            d_rows: list[torch.Tensor] = []
            positions = []
            for k, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                last = prompt_len + chunk.end - 2  # last position whose logits we need
                # every answer token its vectors can change: the chunk's, and the previous chunk's last tokens when
                # the vectors are spread over them (chunking.anchor_span)
                first = max(0, min(chunk.start, chunk.anchors[0] + 1 - prompt_len))
                labels = seq[0, prompt_len + first: last + 2]
                prev = (positions, torch.stack(d_rows) if d_rows else None)
                step_fn, h = make_step(model, seq, layer_path, layer, spec, chunk, last, prev, len(labels))
                delta, (rep,) = _optimise(step_fn, h, labels, cfg, weights_of(chunk.anchors, h.device),
                                          init_of(k, len(chunk.anchors)))
                reports.append(ChunkReport(start=chunk.start, end=chunk.end, anchors=list(chunk.anchors),
                                           seconds=time.perf_counter() - t0, **rep))
                h_rows.extend(h)
                d_rows.extend(delta)
                positions.extend(chunk.anchors)
                if progress is not None:
                    progress.update(1)
            h_all, d_all = torch.stack(h_rows), torch.stack(d_rows)
    for r in reports[-len(chunks):]:
        log.debug("chunk [%d,%d) anchors %s: NLL %.3f -> %.3f in %d steps, |d|/|h| %.2f", r.start, r.end,
                  r.anchors, r.nll_before, r.nll_after, r.steps, r.delta_norm / max(r.h_norm, 1e-12))
    return ValueTargets(layer=layer, positions=positions, h_init=h_all, shifts=d_all, reports=reports)


Groups = Sequence[tuple[slice, slice]]


def _optimise(step_fn: Any, h: torch.Tensor, labels: torch.Tensor, cfg: ValueConfig, weights: torch.Tensor,
              init: torch.Tensor | None = None, groups: Groups | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Adam on ``delta [n_anchors, hidden]``; loss = sum over groups of (mean NLL of the group's labels +
    sum_i w_i wd |delta_i| / |h_i|^2 over its rows); per-row clamp. A group is the rows and labels of one chunk;
    by default one group holds everything.

    A group is done when its loss is below ``stop_loss`` and (if set) every token's NLL is below
    ``stop_token_nll``, or (if ``stop_margin`` is set) when every token is the argmax by at least that
    log-probability margin. The rows of a done group are held where they are (and move again if the group stops
    being done); the search ends when every group is done. Returns the vectors and one report per group.
    """
    groups = list(groups or [(slice(0, h.shape[0]), slice(0, labels.shape[0]))])
    h_norm = h.norm(dim=1)
    max_norm = cfg.clamp_norm * h_norm
    if init is not None and init.shape == h.shape:
        delta = _clamp_rows(init.to(h.device, h.dtype).clone(), max_norm).requires_grad_(True)
    else:
        delta = torch.zeros_like(h, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    first: list[tuple[float, float]] = []
    steps = [0] * len(groups)
    for it in range(cfg.max_steps + 1):
        logits = step_fn(delta)
        tok_nll = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        reg = cfg.weight_decay * weights * delta.norm(dim=1) / h_norm**2
        means = [tok_nll[ls].mean() for _, ls in groups]
        losses = [m + reg[rs].sum() for m, (rs, _) in zip(means, groups)]
        nll = [m.item() for m in means]
        worst = [tok_nll[ls].max().item() for _, ls in groups]
        first = first or list(zip(nll, worst))
        done = []
        for g, (rs, ls) in enumerate(groups):
            ok = losses[g].item() < cfg.stop_loss and (cfg.stop_token_nll is None or worst[g] < cfg.stop_token_nll)
            if cfg.stop_margin is not None and not ok:
                ok = argmax_margin(logits[ls], labels[ls]) >= cfg.stop_margin
            done.append(ok)
        if all(done) or it == cfg.max_steps:
            break
        opt.zero_grad(set_to_none=True)
        sum(losses).backward()
        held = [(rs, delta[rs].detach().clone()) for (rs, _), ok in zip(groups, done) if ok]
        opt.step()
        with torch.no_grad():
            for rs, value in held:
                delta[rs] = value
            _clamp_rows(delta, max_norm)
        for g, ok in enumerate(done):
            steps[g] += not ok
    d = delta.detach()
    return d, [dict(steps=steps[g], nll_before=first[g][0], nll_after=nll[g], worst_before=first[g][1],
                    worst_after=worst[g], delta_norm=d[rs].norm().item(), h_norm=h_norm[rs].norm().item())
               for g, (rs, _) in enumerate(groups)]


def _clamp_rows(x: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``x`` in place so that its norm is at most ``max_norm`` (per row); returns ``x``."""
    return x.mul_((max_norm / x.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)[:, None])


def _layer_outputs(model: nn.Module, layer_path: str, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad(), capture(model, outputs=[layer_path]) as rec, \
            stop_after(model.get_submodule(layer_path)):
        model(input_ids=input_ids, **kwargs)
    return rec.outputs[layer_path]


Prev = tuple[list[int], "torch.Tensor | None"]


def _fresh_cache(cache: Any) -> Any:
    """A cache the next forward may extend without touching ``cache``'s tensors.

    Dynamic cache layers extend by concatenation (new tensors), so copying the container and its layer
    objects, sharing the prefix tensors, is enough; caches of another shape are deep-copied.
    """
    layers = getattr(cache, "layers", None)
    if type(cache).__name__ == "DynamicCache" and isinstance(layers, list) and \
            all(type(lyr).__name__ == "DynamicLayer" for lyr in layers):
        fresh = copy.copy(cache)
        fresh.layers = [copy.copy(lyr) for lyr in layers]
        return fresh
    return copy.deepcopy(cache)


def _full_step(model: nn.Module, seq: torch.Tensor, layer_path: str, layer: int, spec: ArchSpec, chunk: Chunk,
               last: int, prev: Prev, n_labels: int | None = None) -> tuple[Any, torch.Tensor]:
    """Reference implementation: the whole model over ``seq[: last + 1]`` with every vector applied; a step returns
    the logits of the last ``n_labels`` positions (default: the chunk's)."""
    n_labels = n_labels or chunk.size
    inp = seq[:, : last + 1]
    module = model.get_submodule(layer_path)
    h = _layer_outputs(model, layer_path, inp, use_cache=False)[0, list(chunk.anchors)].float()
    prev_pos, prev_d = prev
    cols = [*prev_pos, *chunk.anchors]

    def step(delta: torch.Tensor) -> torch.Tensor:
        vecs = torch.cat([prev_d, delta]) if prev_d is not None else delta
        with add_to_output(module, [0] * len(cols), cols, vecs):
            logits = model(input_ids=inp, use_cache=False).logits
        return logits[0, -n_labels:]

    return step, h


def _cached_step(model: nn.Module, seq: torch.Tensor, layer_path: str, layer: int, spec: ArchSpec, chunk: Chunk,
                 last: int, prev: Prev, n_labels: int | None = None) -> tuple[Any, torch.Tensor]:
    """Prefix cache + replayed lower layers + logits only at the last ``n_labels`` label positions (exact, see
    module doc; at most the positions from the first anchor on)."""
    n_labels = n_labels or chunk.size
    names = _forward_kwargs(model)
    module = model.get_submodule(layer_path)
    a0 = chunk.anchors[0]
    prev_pos, prev_d = prev
    prefix_cache = None
    if a0 > 0:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            if prev_d is not None:  # earlier anchors all lie before a0
                stack.enter_context(add_to_output(module, [0] * len(prev_pos), prev_pos, prev_d))
            prefix_cache = _output_cache(model(input_ids=seq[:, :a0], use_cache=True))
    tail = seq[:, a0: last + 1]  # first anchor .. last label position
    cols = [a - a0 for a in chunk.anchors]

    def cache_kw() -> dict[str, Any]:
        return {names["cache"]: _fresh_cache(prefix_cache)} if prefix_cache is not None else {}

    # layer output over the tail, computed once (the vectors do not change it)
    h_tail = _layer_outputs(model, layer_path, tail, use_cache=True, **cache_kw())
    h = h_tail[0, cols].float()
    keep = {names["keep"]: n_labels} if names["keep"] else {}

    def step(delta: torch.Tensor) -> torch.Tensor:
        with replayed_layers(model.get_submodule(spec.layers), layer, h_tail), \
                add_to_output(module, [0] * len(cols), cols, delta):
            logits = model(input_ids=tail, use_cache=True, **cache_kw(), **keep).logits
        return logits[0, -n_labels:]

    return step, h
