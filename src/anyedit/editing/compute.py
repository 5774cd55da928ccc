"""Compose the steps: tokenize -> chunk -> value search -> backend update -> :class:`EditResult`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..backends import EditContext, get_backend
from ..config import EditConfig, check_layers
from ..errors import EditApplyError, RequestError
from ..model.arch import ArchSpec, get_spec, model_identity, num_layers
from ..model.loading import default_cache_dir
from ..model.logits import answer_margins
from ..model.prompts import context_length, prepare_request
from ..model.weights import Delta, add_deltas, apply_deltas, get_param, restore, tensor_sha256
from ..stats.corpus import corpus_id
from ..stats.covariance import CovarianceCache
from ..stats.preserve import chat_source, load_prompts, preserve_prompt_ids
from ..types import Chunk, EditRequest, PreparedRequest, ValueTargets, edited_from
from .chunking import make_chunks, shared_prefixes
from .history import EditHistory
from .keys import key_editability
from .phrasings import expand_requests
from .presets import preset_config
from .result import EditResult
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
    """The edited layers (the preset's when the config leaves them unset) and the value layer (default: the last
    edited layer), checked against the model's depth."""
    layers = config.layers if config.layers is not None else preset_config(model, config.method).layers
    z = config.value.layer if config.value.layer is not None else layers[-1]
    check_layers(config.method, layers, z, num_layers(model))
    return tuple(layers), z


def _setup(model: nn.Module, config: EditConfig | None, stats_cache: CovarianceCache | None,
           cache_dir: str | Path | None, show_progress: bool, n_requests: int = 1
           ) -> tuple[EditConfig, tuple[int, ...], int, Any, CovarianceCache]:
    """The config (the preset when None; its ``batch`` settings applied for more than one request; layers filled
    in), edited layers, value layer, backend and statistics cache. A bad config, a missing corpus or prompts file
    fails here, before any value search."""
    if config is None:
        config = preset_config(model)
    if n_requests > 1 and config.batch:
        log.info("an edit of %d requests: the config's batch settings apply (%s)", n_requests,
                 ", ".join(f"{k}={v}" for k, v in config.batch.items()))
        config = config.for_batch()
    if config.layers is None:
        config = EditConfig.from_dict({**config.to_dict(), "layers": list(resolve_layers(model, config)[0])})
    layers, z = resolve_layers(model, config)
    backend = get_backend(config.method)
    check = getattr(backend, "check", None)  # a backend's own model-dependent checks, before any work
    if check is not None:
        check(model, config)
    corpus_id(config.stats.corpus)
    if config.preserve.prompts != "builtin":
        load_prompts(config.preserve.prompts)
    if stats_cache is None:
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


@dataclass
class _Plan:
    """The texts an edit is computed over: each request's own wording and its variants (``expanded``: request and
    index of its main request), tokenized once, with their chunks."""

    requests: list[EditRequest]
    expanded: list[tuple[EditRequest, int]]
    prepared: list[PreparedRequest]
    chunks: list[list[Chunk]]
    phrasing_seconds: float
    answer_only: list[bool] = field(default_factory=list)  # a text that carries only the answer's later chunks

    @property
    def main_of(self) -> list[int]:
        return [m for _, m in self.expanded]

    @property
    def first_of(self) -> dict[int, int]:
        """Position of each request's own wording."""
        main_of = self.main_of
        return {m: main_of.index(m) for m in set(main_of)}

    @property
    def is_main(self) -> list[bool]:
        first_of = self.first_of
        return [first_of[m] == k for k, m in enumerate(self.main_of)]

    @property
    def has_variants(self) -> bool:
        return len(self.expanded) > len(self.requests)


def _plan(model: nn.Module, tokenizer: Any, reqs: list[EditRequest], config: EditConfig) -> _Plan:
    """Tokenize and chunk every request (validated before any generation), then its other wordings."""
    max_len = context_length(model, tokenizer)
    own = [prepare_request(tokenizer, r, config.prompt, max_len) for r in reqs]
    own_chunks = [make_chunks(p, config.chunking) for p in own]  # validates before any generation
    ph = config.phrasings
    t = time.perf_counter()
    if any(r.phrasings for r in reqs) or ph.generate or ph.prefixes:
        expanded = expand_requests(model, tokenizer, reqs, ph,
                                   need_subject=config.chunking.first_anchor == "subject_last")
    else:
        expanded = [(r, i) for i, r in enumerate(reqs)]
    plan = _Plan(reqs, expanded, [], [], time.perf_counter() - t)
    for (r, m), main in zip(expanded, plan.is_main):
        p = own[m] if main else prepare_request(tokenizer, r, config.prompt, max_len)
        plan.prepared.append(p)
        plan.chunks.append(own_chunks[m] if main else make_chunks(p, config.chunking))
        plan.answer_only.append(False)
    if ph.other_questions:
        pool = load_prompts(config.preserve.prompts)[: config.preserve.n_prompts]
        for m, r in enumerate(reqs):
            if len(own_chunks[m]) < 2:
                continue  # a one-chunk answer has nothing after its first chunk
            picks = random.Random(ph.seed + m).sample(pool, min(ph.other_questions, len(pool)))
            for j, q in enumerate(picks):
                p = prepare_request(tokenizer, replace(r, question=q, id=f"{r.id or m}~q{j + 1}", phrasings=(),
                                                       subject=None), config.prompt, max_len)
                plan.expanded.append((p.request, m))
                plan.prepared.append(p)
                plan.chunks.append(make_chunks(p, config.chunking)[1:])
                plan.answer_only.append(True)
    return plan


def _search_all(model: nn.Module, spec: ArchSpec, plan: _Plan, z: int, config: EditConfig,
                value_cache: ValueCache | None, desc: str, show_progress: bool) -> list[ValueTargets]:
    """The value search of every text of the plan on the model as it is now (a variant starts from its main
    wording's vectors with ``phrasings.warm_start``), through ``value_cache`` when given."""
    first_of = plan.first_of
    fp = value_cache.fingerprint(model) if value_cache is not None else ""
    values: list[ValueTargets] = []
    main_values: dict[int, ValueTargets] = {}
    total = sum(len(c) for c in plan.chunks)
    with tqdm(total=total, desc=desc, unit="chunk", disable=not show_progress, leave=False) as bar:
        for p, c, m in zip(plan.prepared, plan.chunks, plan.main_of):
            init = None
            if m in main_values and config.phrasings.warm_start:  # a variant: start from its main wording's vectors
                shifts = main_values[m].chunk_shifts()
                shifts = shifts[len(shifts) - len(c):]  # a text carrying only the later chunks: theirs
                init = [d if d.shape[0] == len(ck.anchors) else None for d, ck in zip(shifts, c)]
            key = value_cache.key(fp, p.ids, p.prompt_len, c, z, config.value) if value_cache is not None else None
            if key is not None and init is not None:
                main = plan.prepared[first_of[m]]
                key = (*key, "warm-start", value_cache.key(fp, main.ids, main.prompt_len, plan.chunks[first_of[m]],
                                                          z, config.value))
            v = value_cache.get(key) if value_cache is not None else None
            if v is None:
                v = search_values(model, spec, p.ids, p.prompt_len, c, z, config.value, progress=bar, init=init)
                if value_cache is not None:
                    value_cache.put(key, v)
            else:
                bar.update(len(c))
            values.append(v)
            main_values.setdefault(m, v)
    return values


_PER_ROUND = ("chunk_nll_before", "chunk_steps", "value_search_s", "update_s")  # not the backend's own


@dataclass
class _Rounds:
    """What the refinement rounds produced: the summed deltas, the keys the first round wrote at, the first
    round's values and per-round diagnostics."""

    deltas: dict[str, Delta] = field(default_factory=dict)
    edited_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    first_values: list[ValueTargets] | None = None
    last_values: list[ValueTargets] | None = None  # the last round's, whose targets the final update aimed at
    rounds: list[dict[str, Any]] = field(default_factory=list)
    value_search_s: float = 0.0
    update_s: float = 0.0
    final_check: dict[str, Any] | None = None  # the last search, when it found every chunk reproduced


def _run_rounds(model: nn.Module, tokenizer: Any, spec: ArchSpec, plan: _Plan, config: EditConfig,
                layers: tuple[int, ...], z: int, backend: Any, st: _StatisticsAccess, history: EditHistory | None,
                value_cache: ValueCache | None, show_progress: bool) -> _Rounds:
    """Value search then update, ``config.rounds`` times at most: each later round searches again on the model with
    the deltas so far applied and adds the backend's correction; it stops once every chunk is reproduced (a search
    that needs no step, or an update that reports ``reproduced``, having checked the answers itself), unless the
    last update left an earlier edit's answer below its margin floor (``history_margin_vs_floor`` < 0): then the
    next round's update runs even on a search that needs no step, to win it back. The model is left exactly as it
    was, whatever happens. Each round records its chunks' NLL before the search,
    their optimiser steps and its seconds of value search and update; a last search that found every chunk
    reproduced is ``final_check``."""
    uses_values = type(config.backend).uses_values
    out = _Rounds()
    backup: dict[str, Any] = {}
    try:
        for rnd in range(config.rounds):
            if rnd:  # search again on the model with the deltas so far, and add a correction
                restore(model, backup)
                backup = {}  # restored: not restored again if the next apply fails
                backup = apply_deltas(model, out.deltas)
            t0 = time.perf_counter()
            desc = "value search" + (f" (round {rnd + 1}/{config.rounds})" if config.rounds > 1 else "")
            values = _search_all(model, spec, plan, z, config, value_cache, desc, show_progress) if uses_values else []
            search_s = time.perf_counter() - t0
            out.value_search_s += search_s
            search = {"chunk_nll_before": [r.nll_before for v in values for r in v.reports],
                      "chunk_steps": [r.steps for v in values for r in v.reports], "value_search_s": search_s}
            earlier_lost = bool(out.rounds) and out.rounds[-1].get("history_margin_vs_floor", 0.0) < 0
            if rnd and (not uses_values or all(r.steps == 0 for v in values for r in v.reports)) and not earlier_lost:
                log.info("round %d: every chunk is already reproduced; stopping", rnd + 1)
                out.final_check = search
                break
            out.first_values = out.first_values or values
            out.last_values = values
            ctx = EditContext(model=model, tokenizer=tokenizer, spec=spec, config=config, layers=layers,
                              value_layer=z, prepared=plan.prepared, chunks=plan.chunks, values=values,
                              **st.callables(), history=history, show_progress=show_progress)
            t0, s0 = time.perf_counter(), st.seconds
            update = backend.compute(ctx)
            update_s = time.perf_counter() - t0 - (st.seconds - s0)
            out.update_s += update_s
            out.rounds.append({**search, "update_s": update_s, **update.diagnostics})
            add_deltas(out.deltas, update.deltas)
            for layer, k in update.edited_keys.items():
                out.edited_keys.setdefault(layer, k)  # the keys the first (main) round wrote at
            if update.diagnostics.get("reproduced"):
                log.info("round %d: the update reproduces every edit text; stopping", rnd + 1)
                break
    finally:
        restore(model, backup)
    return out


def _repair(model: nn.Module, tokenizer: Any, plan: _Plan, given: EditConfig | None, passes: int,
            deltas: dict[str, Delta], share: EditHistory, history: EditHistory | None,
            stats_cache: CovarianceCache, show_progress: bool, timings: dict[str, float]
            ) -> tuple[dict[str, Delta], EditHistory, list[dict[str, Any]]]:
    """``EditConfig.repair``: up to ``passes`` times, ask every request (its own wording, teacher-forced) on the
    model with ``deltas`` applied, and edit each one whose answer is not reproduced again on top, one at a time,
    as an edit stack adds a member (``given``, the single-request settings; the caller's ``history``, the batch's
    share and the repairs before it kept as history). Returns the summed deltas, the whole share (the batch's and
    every repair's) and per check the margins found and what each repair did (after the last pass, a check of
    where the answers stand). The model is left as it was."""
    own = [plan.prepared[plan.first_of[m]] for m in range(len(plan.requests))]
    deltas, whole, report = dict(deltas), EditHistory(), []
    whole.merge(share)
    backup: dict[str, Any] = {}

    def reapply() -> None:  # the model with ``deltas`` (as they now are) applied
        nonlocal backup
        restore(model, backup)
        backup = {}  # restored: not restored again if the next apply fails
        backup = apply_deltas(model, deltas)

    try:
        reapply()
        for n in range(passes + 1):
            margins = answer_margins(model, [p.ids for p in own], [p.prompt_len for p in own])
            failing = [m for m, x in enumerate(margins) if x <= 0]
            report.append({"margins": [round(x, 3) for x in margins], "repaired": [], "edits": []})
            if not failing:
                break
            if n == passes:
                log.warning("after %d repair pass(es), %d of %d answers are still not reproduced: %s", passes,
                            len(failing), len(own), ", ".join(str(m + 1) for m in failing))
                break
            log.info("repair pass %d: %d of %d answers not reproduced (%s); editing them again one at a time",
                     n + 1, len(failing), len(own), ", ".join(str(m + 1) for m in failing))
            report[-1]["repaired"] = failing
            hist = EditHistory()  # what the model now carries: the caller's history, the batch, the repairs so far
            if history is not None:
                hist.merge(history)
            hist.merge(whole)
            hist.add_applied(deltas)
            for m in failing:
                res = compute_edits(model, tokenizer, [plan.requests[m]], given, stats_cache=stats_cache,
                                    show_progress=show_progress, history=hist)  # on the model as it now is
                add_deltas(deltas, res.deltas)
                reapply()
                whole.merge(res.history)
                for k in ("value_search_s", "update_s", "statistics_s"):
                    timings[k] += res.timings.get(k, 0.0)
                report[-1]["edits"].append({"request": m, "rounds": len(res.diagnostics["rounds"]),
                                            "total_s": res.timings["total_s"]})
    finally:
        restore(model, backup)
    return deltas, whole, report


def compute_edits(model: nn.Module, tokenizer: Any, requests: EditRequest | dict | Sequence[EditRequest | dict],
                  config: EditConfig | None = None, *, stats_cache: CovarianceCache | None = None,
                  cache_dir: str | Path | None = None, show_progress: bool = True,
                  history: EditHistory | None = None, value_cache: ValueCache | None = None) -> EditResult:
    """Compute the edit for ``requests`` without changing ``model``.

    ``config=None`` uses the measured preset for this model family and size (see ``presets.json``). With more
    than one request, ``config.batch`` applies (``result.config`` is the config used).
    Statistics are cached in ``stats_cache`` (or a new cache under ``cache_dir``).
    ``history``: for sequential editing, what the edits applied before left (their keys, texts and value targets,
    which the update methods protect); this edit's share is added to it (and kept as ``result.history``), and its
    weight changes to ``history.applied``. Pass it only for edits you apply, or use an
    :class:`~anyedit.editing.stack.EditStack`.
    ``value_cache``: reuse value searches made on the same model state with the same settings (a
    :class:`~anyedit.editing.values.ValueCache`), e.g. to compare backends on identical vectors.
    """
    t_start = time.perf_counter()
    reqs = _as_requests(requests)
    spec = get_spec(model)
    given = config
    config, layers, z, backend, stats_cache = _setup(model, config, stats_cache, cache_dir, show_progress, len(reqs))
    plan = _plan(model, tokenizer, reqs, config)
    st = _StatisticsAccess(model, tokenizer, spec, config, stats_cache)
    scores: list[Any] = [None] * len(plan.prepared)
    if _snaps(config):
        cov = st.stats([z])[z]
        with st.timing():
            scores = key_editability(model, spec, [p.ids for p in plan.prepared], z, cov)
    rule = config.chunking.shared_prefix  # whose texts count as rivals: earlier members, other requests
    others = []
    if history is not None and rule != "none":  # an earlier text asking exactly what this edit asks is replaced
        asked = [p.ids[: p.prompt_len] for p in plan.prepared]
        others = [history.rows[i] for i in history.live_rows(asked)]
    if config.chunking.skip_preserve_prefix and config.chunking.first_anchor == "question":
        others += preserve_prompt_ids(tokenizer, config.preserve, config.prompt)
    # a text carrying only the later chunks has no anchor in its prompt: it is no rival, and keeps its chunks
    own = [i for i, a in enumerate(plan.answer_only) if not a]
    groups = [plan.main_of[i] if rule == "all" else 0 for i in own]  # one group: no rival among them
    shared = dict(zip(own, shared_prefixes([plan.prepared[i].ids for i in own], groups, others)))
    if _snaps(config) or any(shared.values()):
        for i in own:
            plan.chunks[i] = make_chunks(plan.prepared[i], config.chunking, scores[i], shared[i])
    done = _run_rounds(model, tokenizer, spec, plan, config, layers, z, backend, st, history, value_cache,
                       show_progress)
    for name, d in done.deltas.items():
        if not d.is_finite():
            raise EditApplyError(f"the {config.method} update for {name} is not finite; nothing was changed")
    share = EditHistory()  # what later edits must keep of this one
    share.add(done.edited_keys, [list(p.ids) for p in plan.prepared],
              [edited_from(p, c) for p, c in zip(plan.prepared, plan.chunks)],
              done.last_values or None)
    timings = {"value_search_s": done.value_search_s, "update_s": done.update_s, "statistics_s": st.seconds}
    repairs: list[dict[str, Any]] = []
    if config.repair and len(reqs) > 1:
        done.deltas, share, repairs = _repair(model, tokenizer, plan, given, config.repair, done.deltas, share,
                                              history, stats_cache, show_progress, timings)
    original = {name: tensor_sha256(get_param(model, name)) for name in done.deltas}
    if history is not None:
        history.merge(share)
        history.add_applied(done.deltas)
    if plan.has_variants:
        timings["phrasings_s"] = plan.phrasing_seconds
    timings["total_s"] = time.perf_counter() - t_start
    diagnostics: dict[str, Any] = {"rounds": done.rounds,
                                   **{k: v for k, v in done.rounds[0].items() if k not in _PER_ROUND}}
    if done.final_check is not None:
        diagnostics["final_check"] = done.final_check
    if repairs:
        diagnostics["repair"] = repairs
    values, is_main = done.first_values, plan.is_main
    reports = [[r.to_dict() for r in v.reports] for v, main in zip(values, is_main) if main]
    if plan.has_variants:
        diagnostics["phrasings"] = [[r.question for (r, m), main in zip(plan.expanded, is_main) if m == i and not main]
                                    for i in range(len(reqs))]
        diagnostics["phrasing_reports"] = [[r.to_dict() for r in v.reports]
                                           for v, main in zip(values, is_main) if not main]
    log.info("edit computed in %.1f s (value search %.1f s, statistics %.1f s, update %.1f s)",
             timings["total_s"], timings["value_search_s"], timings["statistics_s"], timings["update_s"])
    return EditResult(deltas=done.deltas, config=config, requests=reqs, base_model=model_identity(model),
                      original_sha256=original, reports=reports, timings=timings, diagnostics=diagnostics,
                      history=share)


def edit(model: nn.Module, tokenizer: Any, requests: EditRequest | dict | Sequence[EditRequest | dict],
         config: EditConfig | None = None, **kwargs: Any) -> EditResult:
    """:func:`compute_edits` then ``result.apply(model)``; returns the result (use ``result.revert(model)``)."""
    result = compute_edits(model, tokenizer, requests, config, **kwargs)
    result.apply(model, verify=False)
    return result
