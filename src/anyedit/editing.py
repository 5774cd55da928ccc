"""Compose the steps: tokenize -> chunk -> value search -> backend update -> :class:`EditResult`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .arch import ArchSpec, get_spec, model_identity, num_layers
from .backends import EditContext, get_backend
from .chunking import make_chunks
from .config import EditConfig, check_value_layer
from .backends import BackendOutput
from .backends._linalg import trace
from .corpus import corpus_id
from .deltas import Delta, apply_deltas, get_param, restore, tensor_sha256
from .errors import ConfigError, EditApplyError, RequestError
from .phrasings import expand_requests
from .presets import preset_config
from .history import EditHistory
from .preserve import chat_source, load_prompts
from .prompts import context_length, prepare_request
from .result import EditResult
from .stats import CovarianceCache
from .types import EditRequest
from .values import ValueCache, search_values

log = logging.getLogger(__name__)


def _as_requests(requests: EditRequest | dict | Sequence[EditRequest | dict]) -> list[EditRequest]:
    if isinstance(requests, (EditRequest, dict)):
        requests = [requests]
    out = [r if isinstance(r, EditRequest) else EditRequest.from_dict(r) for r in requests]
    if not out:
        raise RequestError("no edit requests given")
    return out


def resolve_layers(model: nn.Module, config: EditConfig) -> tuple[tuple[int, ...], int]:
    n = num_layers(model)
    layers = config.layers
    if layers is None:
        layers = preset_config(model, config.method).layers
    bad = [i for i in layers if i >= n]
    if bad:
        raise ConfigError(f"EditConfig.layers={list(layers)}: the model has {n} layers (0..{n - 1})")
    z = config.value.layer if config.value.layer is not None else layers[-1]
    if z >= n:
        raise ConfigError(f"ValueConfig.layer={z}: the model has {n} layers (0..{n - 1})")
    check_value_layer(config.method, tuple(layers), z)
    return tuple(layers), z


def key_editability(model: nn.Module, spec: ArchSpec, sequences: Sequence[Sequence[int]], layer: int,
                    cov: torch.Tensor) -> list[list[float]]:
    """Per position of each sequence, ``k^T (C + eps I)^-1 k`` of its MLP key at ``layer``: how far a unit
    of weight change (measured by the key statistics ``C``) moves that position's output. Generic tokens,
    whose keys every text shares, score orders of magnitude lower than content tokens."""
    c = cov.double()
    eps = 1e-6 * float(c.diagonal().mean())
    chol = torch.linalg.cholesky(c + eps * torch.eye(c.shape[0], dtype=c.dtype, device=c.device))
    out = []
    for tr in trace(model, spec, sequences, layer, layer):
        k = tr.keys.to(c.device, torch.float64)
        w = torch.linalg.solve_triangular(chol, k.T, upper=False)  # L^-1 k
        out.append(w.pow(2).sum(0).tolist())
    return out


def _setup(model: nn.Module, config: EditConfig | None, stats_cache: CovarianceCache | None,
           cache_dir: str | Path | None, show_progress: bool
           ) -> tuple[EditConfig, tuple[int, ...], int, Any, CovarianceCache]:
    """The config (the preset when None; layers filled in), edited layers, value layer, backend and statistics
    cache. A bad config, a missing corpus or prompts file fails here, before any value search."""
    if config is None:
        config = preset_config(model)
    if config.layers is None:
        config = EditConfig.from_dict({**config.to_dict(), "layers": list(resolve_layers(model, config)[0])})
    layers, z = resolve_layers(model, config)
    backend = get_backend(config.method)
    corpus_id(config.stats.corpus)
    if config.preserve.prompts != "builtin":
        load_prompts(config.preserve.prompts)
    if stats_cache is None:
        from .models import default_cache_dir

        stats_cache = CovarianceCache(cache_dir or default_cache_dir(), show_progress=show_progress)
    return config, layers, z, backend, stats_cache


def _snaps(config: EditConfig) -> bool:
    """Whether chunk boundaries are snapped to the cheapest keys to edit (needs the value layer's statistics)."""
    return bool(config.chunking.snap) and config.chunking.mode != "none"


class _StatisticsAccess:
    """What a backend may load (:class:`EditContext`'s ``stats``, ``chat_stats``, ``preserve_rows`` and
    ``null_basis``), each computed on first use through ``cache``; ``seconds`` sums the time spent in them, so
    that it is reported as statistics time, not update time; ``loaded`` says what was asked for."""

    def __init__(self, model: nn.Module, tokenizer: Any, spec: ArchSpec, config: EditConfig,
                 cache: CovarianceCache) -> None:
        self.model, self.tokenizer, self.spec, self.config, self.cache = model, tokenizer, spec, config, cache
        self.seconds = 0.0
        self.loaded: list[str] = []
        self._chat: Any = None

    def _note(self, what: str) -> None:
        if what not in self.loaded:
            self.loaded.append(what)

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Counts the time spent in the block as statistics time."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t

    def _chat_source(self) -> Any:
        if self._chat is None:
            self._chat = chat_source(self.model, self.tokenizer, self.config.preserve, self.config.prompt,
                                     self.cache.cache_dir, self.config.stats.dtype)
        return self._chat

    def stats(self, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        c = self.config.stats
        self._note(f"key statistics of layers {list(layers)} ({c.corpus}, {c.n_tokens} tokens)")
        with self.timing():
            return self.cache.get(self.model, self.tokenizer, self.spec, layers, c)

    def chat_stats(self, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        self._note(f"key statistics of the chat-preservation conversations at layers {list(layers)}")
        with self.timing():
            return self.cache.get_source(self.model, self.spec, layers, self._chat_source())

    def preserve_rows(self) -> list[list[int]]:
        self._note("the model's answers to the chat-preservation prompts")
        with self.timing():
            return list(self._chat_source().rows())

    def null_basis(self, layers: Sequence[int], threshold: float, chat_weight: float = 0.0) -> dict[int, torch.Tensor]:
        c = self.config.stats
        self._note(f"null-space basis of layers {list(layers)} (key statistics: {c.corpus}, {c.n_tokens} tokens"
                   + (", and the chat-preservation conversations)" if chat_weight > 0 else ")"))
        with self.timing():
            extra = (self._chat_source(), chat_weight) if chat_weight > 0 else None
            return self.cache.null_basis(self.model, self.tokenizer, self.spec, layers, c, threshold, extra)

    def callables(self) -> dict[str, Any]:
        return {"stats": self.stats, "chat_stats": self.chat_stats, "preserve_rows": self.preserve_rows,
                "null_basis": self.null_basis}


def prepare_statistics(model: nn.Module, tokenizer: Any, config: EditConfig | None = None, *,
                       stats_cache: CovarianceCache | None = None, cache_dir: str | Path | None = None,
                       show_progress: bool = True) -> list[str]:
    """Compute and cache, before any edit, every statistic an edit with ``config`` will load (the text key
    statistics of its layers; with ``preserve_weight`` > 0 the chat-conversation statistics or rows; for
    AlphaEdit the null-space basis): whatever the method's ``prepare`` step asks for, on the unedited model.
    ``config=None`` uses the preset. Returns what was prepared, in words (empty for a method that loads no
    statistics, such as ``ft``)."""
    config, layers, z, backend, stats_cache = _setup(model, config, stats_cache, cache_dir, show_progress)
    spec = get_spec(model)
    st = _StatisticsAccess(model, tokenizer, spec, config, stats_cache)
    prepare = getattr(backend, "prepare", None)
    if prepare is not None:
        prepare(EditContext(model=model, tokenizer=tokenizer, spec=spec, config=config, layers=layers, value_layer=z,
                            prepared=[], chunks=[], values=[], **st.callables(), show_progress=show_progress))
    if _snaps(config) and z not in layers:
        st.stats([z])
    return st.loaded


def compute_edits(model: nn.Module, tokenizer: Any, requests: EditRequest | dict | Sequence[EditRequest | dict],
                  config: EditConfig | None = None, *, stats_cache: CovarianceCache | None = None,
                  cache_dir: str | Path | None = None, show_progress: bool = True,
                  history: EditHistory | None = None, value_cache: ValueCache | None = None) -> EditResult:
    """Compute the edit for ``requests`` without changing ``model``.

    ``config=None`` uses the measured preset for this model family and size (see ``presets.json``).
    Statistics are cached in ``stats_cache`` (or a new cache under ``cache_dir``).
    ``history``: for sequential editing, the keys of the edits applied before (AlphaEdit protects them);
    this edit's keys are added to it. Pass it only for edits you apply.
    ``value_cache``: reuse value searches made on the same model state with the same settings (a
    :class:`~anyedit.values.ValueCache`), e.g. to compare backends on identical vectors.
    """
    t_start = time.perf_counter()
    reqs = _as_requests(requests)
    spec = get_spec(model)
    config, layers, z, backend, stats_cache = _setup(model, config, stats_cache, cache_dir, show_progress)
    max_len = context_length(model, tokenizer)
    own = [prepare_request(tokenizer, r, config.prompt, max_len) for r in reqs]
    own_chunks = [make_chunks(p, config.chunking) for p in own]  # validates before any generation
    ph = config.phrasings
    t_ph = time.perf_counter()
    if any(r.phrasings for r in reqs) or ph.generate or ph.prefixes:
        expanded = expand_requests(model, tokenizer, reqs, ph,
                                   need_subject=config.chunking.first_anchor == "subject_last")
    else:
        expanded = [(r, i) for i, r in enumerate(reqs)]
    main_of = [i for _, i in expanded]
    t_ph = time.perf_counter() - t_ph
    first_of = {m: main_of.index(m) for m in set(main_of)}  # position of each request's own wording
    is_main = [first_of[m] == k for k, m in enumerate(main_of)]
    prepared = [own[m] if main else prepare_request(tokenizer, r, config.prompt, max_len)
                for (r, m), main in zip(expanded, is_main)]
    chunks = [own_chunks[m] if main else make_chunks(p, config.chunking)
              for p, m, main in zip(prepared, main_of, is_main)]
    original = {}
    timings: dict[str, float] = {}

    st = _StatisticsAccess(model, tokenizer, spec, config, stats_cache)
    if _snaps(config):
        cov = st.stats([z])[z]
        with st.timing():
            scores = key_editability(model, spec, [p.ids for p in prepared], z, cov)
        chunks = [make_chunks(p, config.chunking, s) for p, s in zip(prepared, scores)]

    uses_values = type(config.backend).uses_values
    deltas: dict[str, Delta] = {}
    edited_keys: dict = {}
    diagnostics: dict[str, Any] = {"rounds": []}
    first_values = None
    timings["value_search_s"] = timings["update_s"] = 0.0
    backup: dict[str, Any] = {}
    try:
        for rnd in range(config.rounds):
            if rnd:  # search again on the model with the deltas so far, and add a correction
                restore(model, backup)
                backup = {}  # restored: not restored again if the next apply fails
                backup = apply_deltas(model, deltas)
            t0 = time.perf_counter()
            total = sum(len(c) for c in chunks)
            desc = "value search" + (f" (round {rnd + 1}/{config.rounds})" if config.rounds > 1 else "")
            values = []
            if uses_values:
                fp = value_cache.fingerprint(model) if value_cache is not None else ""
                with tqdm(total=total, desc=desc, unit="chunk", disable=not show_progress, leave=False) as bar:
                    main_values: dict[int, Any] = {}
                    for p, c, m in zip(prepared, chunks, main_of):
                        init = None
                        if m in main_values and ph.warm_start:  # a variant: start from its main wording's vectors
                            init = [d if d.shape[0] == len(ck.anchors) else None
                                    for d, ck in zip(main_values[m].chunk_deltas(), c)]
                        key = value_cache.key(fp, p.ids, p.prompt_len, c, z, config.value) \
                            if value_cache is not None else None
                        if key is not None and init is not None:
                            main = prepared[first_of[m]]
                            key = (*key, "warm-start", value_cache.key(fp, main.ids, main.prompt_len,
                                                                      chunks[first_of[m]], z, config.value))
                        v = value_cache.get(key) if value_cache is not None else None
                        if v is None:
                            v = search_values(model, spec, p.ids, p.prompt_len, c, z, config.value, progress=bar,
                                              init=init)
                            if value_cache is not None:
                                value_cache.put(key, v)
                        else:
                            bar.update(len(c))
                        values.append(v)
                        main_values.setdefault(m, v)
            timings["value_search_s"] += time.perf_counter() - t0
            nll_now = [r.nll_before for v in values for r in v.reports]
            if rnd and (not uses_values or all(r.steps == 0 for v in values for r in v.reports)):
                log.info("round %d: every chunk is already reproduced; stopping", rnd + 1)
                break
            first_values = first_values or values
            ctx = EditContext(model=model, tokenizer=tokenizer, spec=spec, config=config, layers=layers,
                              value_layer=z, prepared=prepared, chunks=chunks, values=values, **st.callables(),
                              history=history, show_progress=show_progress)
            t0, s0 = time.perf_counter(), st.seconds
            out = backend.compute(ctx)
            timings["update_s"] += time.perf_counter() - t0 - (st.seconds - s0)
            diagnostics["rounds"].append({"chunk_nll_before": nll_now, **out.diagnostics})
            for name, d in out.deltas.items():
                deltas[name] = deltas[name].merged(d) if name in deltas else d
            for layer, k in out.edited_keys.items():
                edited_keys.setdefault(layer, k)  # the keys the first (main) round wrote at
    finally:
        restore(model, backup)
    timings["statistics_s"] = st.seconds
    if len(expanded) > len(reqs):
        timings["phrasings_s"] = t_ph
    diagnostics.update({k: v for k, v in diagnostics["rounds"][0].items() if k != "chunk_nll_before"})
    values = first_values
    out = BackendOutput(deltas, diagnostics)
    for name, d in out.deltas.items():
        if not d.is_finite():
            raise EditApplyError(f"the {config.method} update for {name} is not finite; nothing was changed")
        original[name] = tensor_sha256(get_param(model, name))
    if history is not None:
        history.add(edited_keys)
    timings["total_s"] = time.perf_counter() - t_start
    reports = [[r.to_dict() for r in v.reports] for v, main in zip(values, is_main) if main]
    if len(expanded) > len(reqs):
        out.diagnostics["phrasings"] = [[r.question for (r, m), main in zip(expanded, is_main) if m == i and not main]
                                        for i in range(len(reqs))]
        out.diagnostics["phrasing_reports"] = [[r.to_dict() for r in v.reports]
                                               for v, main in zip(values, is_main) if not main]
    log.info("edit computed in %.1f s (value search %.1f s, statistics %.1f s, update %.1f s)",
             timings["total_s"], timings["value_search_s"], timings["statistics_s"], timings["update_s"])
    return EditResult(deltas=out.deltas, config=config, requests=reqs, base_model=model_identity(model),
                      original_sha256=original, reports=reports, timings=timings, diagnostics=out.diagnostics)


def edit(model: nn.Module, tokenizer: Any, requests: EditRequest | dict | Sequence[EditRequest | dict],
         config: EditConfig | None = None, **kwargs: Any) -> EditResult:
    """:func:`compute_edits` then ``result.apply(model)``; returns the result (use ``result.revert(model)``)."""
    result = compute_edits(model, tokenizer, requests, config, **kwargs)
    result.apply(model, verify=False)
    return result
