"""Run a benchmark end to end: per record measure -> edit -> generate -> score -> revert, streamed to JSONL.

Protocol per record (paper §5 / reference §6, with its flaws fixed):

1. the unedited model answers the question, each paraphrase and each sub-question (kept as ``before``,
   ``paraphrase_before_predictions`` and ``sub_before_predictions``, so every score can be read against what
   the model already said);
2. the edit is computed and applied;
3. greedy answers (explicit generation config) to the question, each paraphrase and each sub-question;
   teacher-forced token accuracy of the new answer; locality on a fixed set of unrelated probe prompts
   answered by the unedited model once per run (token agreement under teacher forcing, identical free
   answers, NLL change per token);
4. the edit is reverted and the touched weights are checked bit for bit against fingerprints taken before
   the edit was computed;
5. one JSON row is appended to ``rows.jsonl`` and flushed. A killed run resumes after the last row.

A record the method cannot edit (its answer is too long for the model, it tokenizes to nothing, the update
is not finite, the device runs out of memory while editing or answering) gets a row ``{"id", "skipped": why}``
instead, with the model left untouched, and the run goes on; the report lists such records. A skipped record
counts as done when the run resumes: delete its row to try it again (e.g. after an out-of-memory). Records
the loader rejected are listed in ``run.json`` (``skipped_records``). Library versions are recorded in
``run.json``; resuming under other versions is allowed with a warning naming them.

Several processes may run the same evaluation into the same directory at once (e.g. one per GPU, or
two 1-thread processes on 2 CPU cores): each record is claimed with an OS file lock
(``claims/<hash>.lock``, released automatically when a process dies) and rows are appended under a lock,
so every record is done once. Sampling (``sample_temperature``) is seeded per record from ``seed`` and
the record ID, so the answers do not depend on how the records were split or resumed.

Paraphrases and sub-questions are never used for editing.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import _io
from ..config import Config, EditConfig, check_bool, check_int, check_number
from ..editing.compute import compute_edits, resolve_layers
from ..errors import EditApplyError, RequestError
from ..model.arch import get_spec, model_identity
from ..model.generation import generate, seeded
from ..model.loading import default_cache_dir
from ..model.prompts import context_length, prepare_request
from ..model.weights import get_param, tensor_sha256
from ..stats.covariance import CovarianceCache
from ..stats.preserve import builtin_prompts
from . import rundir
from .datasets import EvalRecord, LoadedDataset
from .locality import FactualProbe, LocalityProbe
from .scoring import Scorer, mean_dicts, token_accuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings(Config):
    """How each record is answered and scored. ``max_new_tokens=None``: answer length + 32 for the question and
    paraphrase; ``sub_max_new_tokens`` for each sub-question. ``sample_temperature``: the reference's near-greedy
    sampling (e.g. 0.001) instead of greedy. ``n_probes``: how many of the built-in probe prompts measure locality
    (0 = off), each answered with up to ``probe_tokens`` tokens. ``facts``: ask the built-in factual probes (short
    questions with one right answer) before and after each edit and count those still answered right.
    ``compat``: the reference's metric definitions too; ``embed``: the MiniLM similarity; ``seed``: of sampled
    answers (per record)."""

    max_new_tokens: int | None = None
    sub_max_new_tokens: int = 64
    sample_temperature: float | None = None
    n_probes: int = 10
    probe_tokens: int = 32
    facts: bool = True
    compat: bool = True
    embed: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        c = type(self)
        if self.max_new_tokens is not None:
            check_int(c, "max_new_tokens", self.max_new_tokens)
        check_int(c, "sub_max_new_tokens", self.sub_max_new_tokens)
        if self.sample_temperature is not None:
            check_number(c, "sample_temperature", self.sample_temperature)
        check_int(c, "n_probes", self.n_probes, minimum=0)
        check_int(c, "probe_tokens", self.probe_tokens)
        check_bool(c, "facts", self.facts)
        check_bool(c, "compat", self.compat)
        check_bool(c, "embed", self.embed)
        check_int(c, "seed", self.seed, minimum=0)


class RecordSkipped(Exception):
    """This record cannot be edited with this method (the reason is the message); the model is unchanged."""


def _manifest(model: nn.Module, dataset: LoadedDataset, config: EditConfig, settings: EvalSettings,
              label: str | None) -> dict[str, Any]:
    return {"dataset": {"path": str(Path(dataset.path).resolve()), "format": dataset.format},
            "model": model_identity(model), "config": config.to_dict(), "settings": settings.to_dict(),
            "label": label or f"{config.method}{'' if config.chunking.mode == 'none' else '+'}"}


def evaluate(model: nn.Module, tokenizer: Any, dataset: LoadedDataset, config: EditConfig, out_dir: str | Path, *,
             settings: EvalSettings | None = None, label: str | None = None, cache_dir: str | Path | None = None,
             show_progress: bool = True) -> Path:
    """Evaluate ``config`` on every record of ``dataset``; rows go to ``out_dir/rows.jsonl`` (resumable; other
    processes may work on the same directory at the same time, see the module doc)."""
    settings = settings or EvalSettings()
    out = Path(out_dir)
    manifest = _manifest(model, dataset, config, settings, label)
    rundir.check_manifest(out, manifest)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with rundir.dir_lock(out):
        rundir.check_manifest(out, manifest)  # another process may have started the run meanwhile
        done = rundir.done_ids(out / "rows.jsonl", clean=True)
        if not (out / "run.json").is_file():  # written whole: a process starting beside us never reads half
            _io.write_text(out / "run.json", json.dumps({**manifest, "versions": rundir.versions(),
                                                         "skipped_records": dataset.skipped,
                                                         "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    todo = [r for r in dataset.records if r.id not in done]
    if done:
        log.info("resuming: %d of %d records already done", len(done), len(dataset.records))
    cache = CovarianceCache(cache_dir or default_cache_dir(), show_progress=show_progress)
    scorer = Scorer(settings.compat, settings.embed)
    probe = None
    if settings.n_probes > 0 and todo:
        probe = LocalityProbe(model, tokenizer, config.prompt, builtin_prompts("probe")[: settings.n_probes],
                              max_new_tokens=settings.probe_tokens)
    facts = FactualProbe(model, tokenizer, config.prompt) if settings.facts and todo else None
    sample = settings.sample_temperature is not None
    gen_kw = dict(sample=sample, temperature=settings.sample_temperature or 1.0)
    ids = {r.id for r in dataset.records}
    elsewhere = 0
    with tqdm(total=len(dataset.records), initial=len(done), desc="eval", unit="record",
              disable=not show_progress) as bar:
        for rec in todo:
            claim = rundir.claim(out, rec.id)
            if claim is None:
                elsewhere += 1  # another process is on it
                continue
            with claim:
                with rundir.dir_lock(out):
                    if rec.id in rundir.done_ids(out / "rows.jsonl"):
                        continue  # finished by another process since we started
                try:
                    with seeded(settings.seed + zlib.crc32(rec.id.encode())):  # sampling seeded per record
                        row = evaluate_record(model, tokenizer, rec, config, settings, scorer, probe, cache, gen_kw,
                                              facts)
                except RecordSkipped as e:
                    log.warning("record %s skipped: %s", rec.id, e)
                    row = {"id": rec.id, "skipped": str(e)}
                with rundir.dir_lock(out), open(out / "rows.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                    bar.n = len(rundir.done_ids(out / "rows.jsonl") & ids)
                bar.refresh()
    if elsewhere:
        log.info("%d record(s) were being evaluated by another process when this one reached them", elsewhere)
    return out


def evaluate_record(model: nn.Module, tokenizer: Any, rec: EvalRecord, config: EditConfig, settings: EvalSettings,
                    scorer: Scorer, probe: LocalityProbe | None, cache: CovarianceCache,
                    gen_kw: dict[str, Any], facts: FactualProbe | None = None) -> dict[str, Any]:
    req = rec.request
    try:
        n_target = len(prepare_request(tokenizer, req, config.prompt, context_length(model, tokenizer)).target_ids)
    except RequestError as e:
        raise RecordSkipped(f"{type(e).__name__}: {e}") from e
    max_new = settings.max_new_tokens or n_target + 32
    t0 = time.perf_counter()
    before = generate(model, tokenizer, req.question, config.prompt, max_new_tokens=max_new, **gen_kw)[0]
    sub_qs = [q for q, _ in rec.sub_questions]

    def answer_subs() -> list[str]:  # the sub-questions, asked on their own (before and after the edit)
        return generate(model, tokenizer, sub_qs, config.prompt, max_new_tokens=settings.sub_max_new_tokens,
                        **gen_kw) if sub_qs else []

    def sub_scores(preds: list[str]) -> dict[str, float]:
        return mean_dicts([scorer.short(a, p) for (_, a), p in zip(rec.sub_questions, preds)])

    subs_before = answer_subs()
    acc_before = token_accuracy(model, tokenizer, rec, config)
    paras_before = generate(model, tokenizer, list(rec.paraphrases), config.prompt, max_new_tokens=max_new,
                            **gen_kw) if rec.paraphrases else []
    t_gen0 = time.perf_counter() - t0
    fingerprints = _fingerprints(model, config)
    try:
        result = compute_edits(model, tokenizer, req, config, stats_cache=cache, show_progress=False)
        fingerprints.update({n: h for n, h in result.original_sha256.items() if n not in fingerprints})
        result.apply(model, verify=False)  # all or nothing: a non-finite sum is refused before any write
    except (RequestError, EditApplyError, torch.OutOfMemoryError) as e:
        _check_unchanged(model, fingerprints, rec.id, "failed edit")
        raise RecordSkipped(f"{type(e).__name__}: {e}") from e
    out_of_memory = None
    try:
        t1 = time.perf_counter()
        answers = generate(model, tokenizer, [req.question, *rec.paraphrases], config.prompt,
                           max_new_tokens=max_new, **gen_kw)
        subs = answer_subs()
        acc = token_accuracy(model, tokenizer, rec, config)
        loc = None
        if probe is not None:
            rep = probe.compare(model)
            loc = rep.to_dict()
        fact_rep = facts.compare(model).to_dict() if facts is not None else None
        t_gen = time.perf_counter() - t1 + t_gen0
    except torch.OutOfMemoryError as e:
        out_of_memory = e
    finally:
        result.revert(model)
    _check_unchanged(model, fingerprints, rec.id, "revert")
    if out_of_memory is not None:
        raise RecordSkipped(f"{type(out_of_memory).__name__} while answering after the edit: {out_of_memory}")
    row: dict[str, Any] = {
        "id": rec.id, "category": rec.category, "question": req.question, "answer_tokens": n_target,
        "n_chunks": sum(len(r) for r in result.reports),
        "before": before, "prediction": answers[0], "paraphrase_predictions": answers[1:],
        "paraphrase_before_predictions": paras_before,
        "sub_predictions": subs, "sub_before_predictions": subs_before,
        "scores": {"before": scorer.long(req.answer, before), "question": scorer.long(req.answer, answers[0]),
                   "paraphrase": mean_dicts([scorer.long(req.answer, a) for a in answers[1:]]),
                   "paraphrase_before": mean_dicts([scorer.long(req.answer, a) for a in paras_before]),
                   "sub": sub_scores(subs), "sub_before": sub_scores(subs_before),
                   "token_accuracy": acc, "token_accuracy_before": acc_before},
        "locality": loc,
        "facts": fact_rep,
        "timings": {**result.timings, "generation_s": t_gen},
        "realised_fraction": result.diagnostics.get("realised_fraction"),
    }
    return row


def _fingerprints(model: nn.Module, config: EditConfig) -> dict[str, str]:
    """SHA-256 of every parameter of the layers ``config`` may edit, before the edit is computed."""
    spec = get_spec(model)
    layers, _ = resolve_layers(model, config)
    prefixes = tuple(spec.layer_path(i) + "." for i in layers)
    return {n: tensor_sha256(p) for n, p in model.named_parameters() if n.startswith(prefixes)}


def _check_unchanged(model: nn.Module, fingerprints: dict[str, str], rid: str, what: str) -> None:
    changed = [n for n, h in fingerprints.items() if tensor_sha256(get_param(model, n)) != h]
    if changed:
        raise EditApplyError(f"record {rid}: after the {what} {changed} differ from the weights before the edit")
