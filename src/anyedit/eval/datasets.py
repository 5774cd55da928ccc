"""Benchmark loaders: the original file formats -> :class:`EvalRecord` (a request plus evaluation fields).

Formats (``format="auto"`` picks one from the first record's fields):

* ``unkebench`` — UnKEBench: ``id, question, para_question, answer, sub_question[], sub_answer[]``.
* ``mquake`` — AKEW MQuAKE-CF: ``case_id, requested_rewrite[]``; as the reference, the first rewrite's
  ``question`` and ``fact_new_uns`` (the long answer), its ``unsfact_triplets_GPT[:5]`` (prompt filled with
  the subject -> target) as sub-questions; no paraphrase.
* ``counterfact`` / ``wikiupdate`` — AKEW CounterFact / WikiUpdate: ``requested_rewrite`` (one object) with
  ``prompt_full`` (or ``prompt`` filled with ``subject``) as the question, ``fact_new_uns`` as the answer,
  the top-level ``paraphrase_prompts[0]`` as the paraphrase and the triplets as sub-questions.
* ``editeverything`` — EditEverything: ``id, question, answer, category``.
* ``plain`` — your own edits: ``{"question", "answer"}`` plus optional ``id``, ``paraphrases``,
  ``sub_questions`` (list of ``[question, answer]``), ``category``, ``subject``.

The AKEW formats also carry the rewrite's ``subject`` into the request when the question mentions it (for
``chunking.first_anchor="subject_last"``, the original MEMIT placement).

Files are JSON lists or JSONL. Invalid records are reported by id and skipped (never mangled).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import read_records
from ..errors import RequestError
from ..types import EditRequest

log = logging.getLogger(__name__)

FORMATS = ("unkebench", "mquake", "counterfact", "wikiupdate", "editeverything", "plain")


@dataclass(frozen=True)
class EvalRecord:
    id: str
    request: EditRequest
    paraphrases: tuple[str, ...] = ()
    sub_questions: tuple[tuple[str, str], ...] = ()
    category: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["request"] = self.request.to_dict()
        return d


@dataclass
class LoadedDataset:
    path: str
    format: str
    records: list[EvalRecord]
    skipped: list[str] = field(default_factory=list)  # "id: why"


def detect_format(record: Any) -> str:
    if not isinstance(record, dict):
        raise RequestError("the first record is not a JSON object; cannot detect the dataset format")
    if "requested_rewrite" in record:
        rw = record["requested_rewrite"]
        if isinstance(rw, list):
            return "mquake"
        has_time = "time_new" in record or (isinstance(rw, dict) and "time_new" in rw)
        return "wikiupdate" if has_time else "counterfact"
    if "para_question" in record or "sub_question" in record:
        return "unkebench"
    if "paraphrases" in record or "sub_questions" in record:
        return "plain"
    if "category" in record and "question" in record and "answer" in record:
        return "editeverything"
    if "question" in record and "answer" in record:
        return "plain"
    raise RequestError(f"cannot detect the dataset format from fields {sorted(record)}; pass one of {FORMATS}")


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


def _subject(rw: dict[str, Any], question: str) -> str | None:
    """The rewrite's subject when the question mentions it (for ``first_anchor="subject_last"``)."""
    subject = rw.get("subject")
    return subject if isinstance(subject, str) and subject.strip() and subject.strip() in question else None


def _triplets(rw: dict[str, Any], limit: int = 5) -> tuple[tuple[str, str], ...]:
    out = []
    for t in rw.get("unsfact_triplets_GPT", [])[:limit]:
        prompt, target = t["prompt"], t["target"]
        if not isinstance(prompt, str) or not isinstance(target, str):
            raise ValueError("unsfact_triplets_GPT prompt and target must be strings")
        q = prompt.replace("{}", t["subject"]) if "{}" in prompt else prompt
        out.append((q, target))
    return tuple(out)


def record_id(rec: Any, index: int) -> str:
    """A record's ID: its ``id``, else its ``case_id`` (AKEW), else its index in the file."""
    if isinstance(rec, dict):
        for key in ("id", "case_id"):
            if rec.get(key) is not None:
                return str(rec[key])
    return str(index)


def _convert(rec: dict[str, Any], fmt: str, index: int) -> EvalRecord:
    rid = record_id(rec, index)
    if fmt == "unkebench":
        subs_q = _str_list(rec.get("sub_question", []), "sub_question")
        subs_a = _str_list(rec.get("sub_answer", []), "sub_answer")
        if len(subs_q) != len(subs_a):
            raise ValueError(f"{len(subs_q)} sub_question but {len(subs_a)} sub_answer")
        para = rec.get("para_question")
        return EvalRecord(rid, EditRequest(rec["question"], rec["answer"], id=rid),
                          (para,) if isinstance(para, str) and para.strip() else (),
                          tuple(zip(subs_q, subs_a))[:5])
    if fmt == "mquake":
        rw = rec["requested_rewrite"][0]
        return EvalRecord(rid, EditRequest(rw["question"], rw["fact_new_uns"], id=rid,
                                           subject=_subject(rw, rw["question"])), (), _triplets(rw))
    if fmt in ("counterfact", "wikiupdate"):
        rw = rec["requested_rewrite"]
        q = rw.get("prompt_full") or rw["prompt"].replace("{}", rw["subject"])
        para = _str_list(rec.get("paraphrase_prompts") or [], "paraphrase_prompts")
        return EvalRecord(rid, EditRequest(q, rw["fact_new_uns"], id=rid, subject=_subject(rw, q)),
                          tuple(para[:1]), _triplets(rw))
    if fmt == "editeverything":
        return EvalRecord(rid, EditRequest(rec["question"], rec["answer"], id=rid), category=rec.get("category"))
    if fmt == "plain":
        paras = _str_list(rec.get("paraphrases", []), "paraphrases")
        subs = rec.get("sub_questions", [])
        if not isinstance(subs, list) or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in subs):
            raise ValueError("sub_questions must be a list of [question, answer] pairs")
        return EvalRecord(rid, EditRequest(rec["question"], rec["answer"], id=rid, subject=rec.get("subject")),
                          tuple(paras), tuple((str(a), str(b)) for a, b in subs), rec.get("category"))
    raise RequestError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")


def load_dataset(path: str | Path, format: str = "auto", limit: int | None = None,
                 ids: Sequence[str] | None = None) -> LoadedDataset:
    """Read ``path`` (JSON list or JSONL) in ``format``; the first ``limit`` valid records, only those whose
    ID (``id``, ``case_id`` or the index in the file) is in ``ids`` when given."""
    path = Path(path)
    data = read_records(path, "dataset file")
    fmt = detect_format(data[0]) if format == "auto" else format
    if fmt not in FORMATS:
        raise RequestError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    out = LoadedDataset(str(path), fmt, [])
    wanted = None if ids is None else {str(i) for i in ids}
    seen: set[str] = set()
    for i, rec in enumerate(data):
        if limit is not None and len(out.records) >= limit:
            break
        rid = record_id(rec, i)
        if wanted is not None:
            if rid not in wanted:
                continue
            seen.add(rid)
        try:
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            out.records.append(_convert(rec, fmt, i))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            why = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            out.skipped.append(f"{rid}: {why}")
            log.warning("%s: record %s skipped (%s)", path.name, rid, why)
    missing = sorted(wanted - seen) if wanted is not None and (limit is None or len(out.records) < limit) else []
    if missing:
        raise RequestError(f"{path}: no record with ID {', '.join(missing)}")
    if not out.records:
        raise RequestError(f"{path}: no valid {fmt} records" + (f" ({out.skipped[0]})" if out.skipped else ""))
    return out
