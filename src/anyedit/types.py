"""Plain data passed between the layers: requests, tokenized requests, chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError


@dataclass(frozen=True)
class EditRequest:
    """Ask ``question``, get ``answer``: the knowledge to write into the model.

    ``id`` is an optional label carried into results; ``extra`` holds benchmark fields (paraphrase,
    sub-questions) that the editor never trains on.
    """

    question: str
    answer: str
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise RequestError(f"request {self.id or ''}: the question is empty".replace("request : ", ""))
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise RequestError(f"request {self.id or ''}: the answer is empty".replace("request : ", ""))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"question": self.question, "answer": self.answer}
        if self.id is not None:
            d["id"] = self.id
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditRequest":
        if not isinstance(d, dict):
            raise RequestError(f"a request must be a JSON object with 'question' and 'answer', got {type(d).__name__}")
        missing = [k for k in ("question", "answer") if k not in d]
        if missing:
            raise RequestError(f"request {d.get('id', '')!s}: missing field(s) {', '.join(missing)}".replace("request : ", "request: "))
        rid = d.get("id")
        return cls(question=d["question"], answer=d["answer"], id=None if rid is None else str(rid),
                   extra=dict(d.get("extra", {})))


@dataclass(frozen=True)
class PreparedRequest:
    """A request tokenized once: ``prompt_ids + target_ids`` is the edit text; indices never move.

    ``question_start``/``question_end`` index (in ``prompt_ids``) the question's first and last token; ``target_offsets``
    are the character spans of the answer tokens in ``request.answer`` (the appended end-of-turn token
    gets ``(len(answer), len(answer))``).
    """

    request: EditRequest
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    question_start: int
    question_end: int
    target_offsets: tuple[tuple[int, int], ...]
    end_token_id: int | None

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
