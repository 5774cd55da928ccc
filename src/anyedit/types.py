"""Plain data passed between the layers: requests, tokenized requests, chunks, optimised vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import RequestError


def where(rid: str | None) -> str:
    """``"request ID: "`` for error messages, or nothing when the request has no id."""
    return f"request {rid}: " if rid else ""


@dataclass(frozen=True)
class EditRequest:
    """Ask ``question``, get ``answer``: the knowledge to write into the model.

    ``id`` is an optional label carried into results; ``extra`` holds benchmark fields (paraphrase,
    sub-questions) that the editor never trains on. ``subject`` (optional) names the entity the fact is
    about; it must occur in the question, and ``chunking.first_anchor="subject_last"`` places the first
    vector on its last token (the original MEMIT/ROME placement). ``phrasings`` are other wordings of the
    question that are edited together with it (so that the new answer also comes for them).
    """

    question: str
    answer: str
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    subject: str | None = None
    phrasings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise RequestError(f"{where(self.id)}the question is empty")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise RequestError(f"{where(self.id)}the answer is empty")
        if isinstance(self.phrasings, list):
            object.__setattr__(self, "phrasings", tuple(self.phrasings))
        if not isinstance(self.phrasings, tuple) or not all(isinstance(q, str) and q.strip() for q in self.phrasings):
            raise RequestError(f"{where(self.id)}phrasings must be a list of non-empty questions")
        if self.subject is not None:
            if not isinstance(self.subject, str) or not self.subject.strip():
                raise RequestError(f"{where(self.id)}the subject is empty")
            if self.subject.strip() not in self.question:
                raise RequestError(f"{where(self.id)}the subject {self.subject!r} does not occur in the question "
                                   f"{self.question[:80]!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"question": self.question, "answer": self.answer}
        if self.id is not None:
            d["id"] = self.id
        if self.extra:
            d["extra"] = self.extra
        if self.subject is not None:
            d["subject"] = self.subject
        if self.phrasings:
            d["phrasings"] = list(self.phrasings)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditRequest":
        if not isinstance(d, dict):
            raise RequestError(f"a request must be a JSON object with 'question' and 'answer', got {type(d).__name__}")
        missing = [k for k in ("question", "answer") if k not in d]
        if missing:
            rid = d.get("id")
            raise RequestError(f"{where(None if rid is None else str(rid)) or 'request: '}missing field(s) "
                               f"{', '.join(missing)}")
        rid = d.get("id")
        return cls(question=d["question"], answer=d["answer"], id=None if rid is None else str(rid),
                   extra=dict(d.get("extra", {})), subject=d.get("subject"),
                   phrasings=d.get("phrasings", ()))


@dataclass(frozen=True)
class PreparedRequest:
    """A request tokenized once: ``prompt_ids + target_ids`` is the edit text; indices never move.

    ``question_start``/``question_end`` index (in ``prompt_ids``) the question's first and last token;
    ``target_offsets`` are the character spans of the answer tokens in ``request.answer`` (the appended
    end-of-turn token gets ``(len(answer), len(answer))``). ``subject_end`` is the index of the subject's last
    token (first occurrence in the question), or ``None`` when the request names no subject.
    """

    request: EditRequest
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    question_start: int
    question_end: int
    target_offsets: tuple[tuple[int, int], ...]
    end_token_id: int | None
    subject_end: int | None = None

    @property
    def ids(self) -> list[int]:
        return [*self.prompt_ids, *self.target_ids]

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


@dataclass(frozen=True)
class Chunk:
    """Target tokens ``[start, end)`` and the sequence positions whose hidden states carry them.

    In the sequence ``prompt + target`` the chunk's tokens are predicted by positions
    ``prompt_len + start - 1 ... prompt_len + end - 2``. ``anchors`` (sorted) are the positions whose
    layer output is edited for this chunk; the paper uses one, the token before the chunk.
    """

    start: int
    end: int
    anchors: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end) or not self.anchors or min(self.anchors) < 0 \
                or list(self.anchors) != sorted(set(self.anchors)):
            raise ValueError(f"invalid chunk {self}")

    @property
    def size(self) -> int:
        return self.end - self.start


def edited_from(prepared: PreparedRequest, chunks: Sequence[Chunk]) -> int:
    """Where the part of the answer an edit text carries begins in ``prompt + answer``: its first chunk's start
    (the whole answer, except for a text that carries only the answer's later chunks, see
    ``PhrasingConfig.other_questions``)."""
    return prepared.prompt_len + (chunks[0].start if chunks else 0)


@dataclass
class ChunkReport:
    """How the optimisation of one chunk went."""

    start: int
    end: int
    anchors: list[int]
    steps: int
    nll_before: float
    nll_after: float
    worst_before: float  # largest token NLL in the chunk
    worst_after: float
    delta_norm: float
    h_norm: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ValueTargets:
    """Optimised vectors of one request at layer ``layer``, one row per anchor position (all chunks,
    in order): ``targets = h_init + shifts`` (the residual-stream shifts the value search found; the weight
    changes that write them are :class:`anyedit.model.weights.Delta`)."""

    layer: int
    positions: list[int]
    h_init: torch.Tensor  # [m, hidden] float32
    shifts: torch.Tensor  # [m, hidden] float32
    reports: list[ChunkReport] = field(default_factory=list)

    @property
    def targets(self) -> torch.Tensor:
        return self.h_init + self.shifts

    def chunk_shifts(self) -> list[torch.Tensor]:
        """The vectors split by chunk (``[n_anchors, hidden]`` each, in chunk order)."""
        return list(torch.split(self.shifts, [len(r.anchors) for r in self.reports]))
