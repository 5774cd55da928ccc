"""Paper Step 3 (Eq. 9): optimise one residual-stream vector per chunk.

For chunk k, a vector ``delta_k`` is added to the output of decoder layer ``z`` at the chunk's anchor
position, with the vectors of chunks ``< k`` already applied, and optimised so that the model
generates the chunk's tokens given the prompt and the previous chunks.

Two exact implementations:

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
from ..model.state import eval_mode, frozen, input_device
from ..types import Chunk, ChunkReport, ValueTargets

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
    """Optimise the vectors of all chunks of one request, in order. The model is not modified.

    ``anchor_weights`` (optional, position -> weight) scales the weight decay of individual anchors, so that
    a chunk with several anchors puts its change where it is cheap. ``init`` (optional, per chunk) starts
    a chunk's vectors from the given ``[n_anchors, hidden]`` tensor instead of zero (warm start).
    """
    device = input_device(model)
    seq = torch.tensor([list(ids)], device=device)
    layer_path = spec.layer_path(layer)
    h_rows: list[torch.Tensor] = []
    d_rows: list[torch.Tensor] = []
    positions: list[int] = []
    reports: list[ChunkReport] = []
    with eval_mode(model), frozen(model):
        for k, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            last = prompt_len + chunk.end - 2  # last position whose logits we need
            labels = seq[0, prompt_len + chunk.start: last + 2]
            prev = (positions, torch.stack(d_rows) if d_rows else None)
            step_fn, h = (_cached_step if cfg.cache_prefix else _full_step)(
                model, seq, layer_path, layer, spec, chunk, last, prev)
            weights = torch.tensor([(anchor_weights or {}).get(a, 1.0) for a in chunk.anchors], device=h.device)
            delta, rep = _optimise(step_fn, h, labels, cfg, weights, None if init is None else init[k])
            reports.append(ChunkReport(start=chunk.start, end=chunk.end, anchors=list(chunk.anchors),
                                       seconds=time.perf_counter() - t0, **rep))
            h_rows.extend(h)
            d_rows.extend(delta)
            positions.extend(chunk.anchors)
            log.debug("chunk [%d,%d) anchors %s: NLL %.3f -> %.3f in %d steps, |d|/|h| %.2f", chunk.start,
                      chunk.end, list(chunk.anchors), rep["nll_before"], rep["nll_after"], rep["steps"],
                      rep["delta_norm"] / max(rep["h_norm"], 1e-12))
            if progress is not None:
                progress.update(1)
    return ValueTargets(layer=layer, positions=positions, h_init=torch.stack(h_rows), shifts=torch.stack(d_rows),
                        reports=reports)


def _optimise(step_fn: Any, h: torch.Tensor, labels: torch.Tensor, cfg: ValueConfig,
              weights: torch.Tensor, init: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Adam on ``delta [n_anchors, hidden]``; loss = NLL + sum_i w_i wd |delta_i| / |h_i|^2; per-row clamp.

    Stops when the loss is below ``stop_loss`` and (if set) every token's NLL is below ``stop_token_nll``, or (if
    ``stop_margin`` is set) when every token is the argmax by at least that log-probability margin.
    """
    h_norm = h.norm(dim=1)
    max_norm = cfg.clamp_norm * h_norm
    if init is not None and init.shape == h.shape:
        delta = _clamp_rows(init.to(h.device, h.dtype).clone(), max_norm).requires_grad_(True)
    else:
        delta = torch.zeros_like(h, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    first: tuple[float, float] | None = None
    steps = 0
    for it in range(cfg.max_steps + 1):
        logits = step_fn(delta)
        tok_nll = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        nll_t = tok_nll.mean()
        loss = nll_t + cfg.weight_decay * (weights * delta.norm(dim=1) / h_norm**2).sum()
        nll, worst = nll_t.item(), tok_nll.max().item()
        first = first or (nll, worst)
        done = loss.item() < cfg.stop_loss and (cfg.stop_token_nll is None or worst < cfg.stop_token_nll)
        if cfg.stop_margin is not None and not done:
            done = argmax_margin(logits, labels) >= cfg.stop_margin
        if done or it == cfg.max_steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        with torch.no_grad():
            _clamp_rows(delta, max_norm)
    d = delta.detach()
    return d, dict(steps=steps, nll_before=first[0], nll_after=nll, worst_before=first[1], worst_after=worst,
                   delta_norm=d.norm().item(), h_norm=h_norm.norm().item())


@torch.no_grad()
def argmax_margin(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The smallest, over positions, margin of the label's logit over the best other logit (= the log-probability
    margin over the runner-up); positive when every label is the argmax."""
    logits = logits.float()
    target = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return float((target - other).min())


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
               last: int, prev: Prev) -> tuple[Any, torch.Tensor]:
    """Reference implementation: the whole model over ``seq[: last + 1]`` with every vector applied."""
    inp = seq[:, : last + 1]
    module = model.get_submodule(layer_path)
    h = _layer_outputs(model, layer_path, inp, use_cache=False)[0, list(chunk.anchors)].float()
    prev_pos, prev_d = prev
    cols = [*prev_pos, *chunk.anchors]

    def step(delta: torch.Tensor) -> torch.Tensor:
        vecs = torch.cat([prev_d, delta]) if prev_d is not None else delta
        with add_to_output(module, [0] * len(cols), cols, vecs):
            logits = model(input_ids=inp, use_cache=False).logits
        return logits[0, -chunk.size:]

    return step, h


def _cached_step(model: nn.Module, seq: torch.Tensor, layer_path: str, layer: int, spec: ArchSpec, chunk: Chunk,
                 last: int, prev: Prev) -> tuple[Any, torch.Tensor]:
    """Prefix cache + replayed lower layers + logits only at label positions (exact, see module doc)."""
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
    keep = {names["keep"]: chunk.size} if names["keep"] else {}

    def step(delta: torch.Tensor) -> torch.Tensor:
        with replayed_layers(model.get_submodule(spec.layers), layer, h_tail), \
                add_to_output(module, [0] * len(cols), cols, delta):
            logits = model(input_ids=tail, use_cache=True, **cache_kw(), **keep).logits
        return logits[0, -chunk.size:]

    return step, h
