"""Turn requests into token ids once: the prompt (chat template or raw text) and the target.

The target is the answer tokenized on its own (no special tokens) followed by the template's
end-of-turn token (raw mode: the EOS token), so the edited model stops after the answer. Prompt and
target ids are concatenated as lists and never re-tokenized as one string (see reference §2.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import PromptConfig
from ..errors import ConfigError, TokenizationError
from ..types import EditRequest, PreparedRequest, where

_SENTINEL = "\u2063ANYEDIT_SENTINEL\u2063"


def uses_chat_template(tokenizer: Any, cfg: PromptConfig) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if cfg.chat_template is True and not has:
        raise ConfigError("prompt.chat_template=true, but the tokenizer has no chat template; use false for raw text")
    return has if cfg.chat_template is None else bool(cfg.chat_template)


def _messages(question: str, cfg: PromptConfig) -> list[dict[str, str]]:
    msgs = []
    if cfg.system_prompt is not None:
        msgs.append({"role": "system", "content": cfg.system_prompt})
    msgs.append({"role": "user", "content": question})
    return msgs


def _template_text(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):
        raise TokenizationError("the chat template did not render to a string")
    return text


def prompt_text(tokenizer: Any, question: str, cfg: PromptConfig) -> str:
    """The prompt as text (for display and for generation)."""
    if uses_chat_template(tokenizer, cfg):
        return _template_text(tokenizer, _messages(question, cfg), True)
    return question


def encode_prompt(tokenizer: Any, question: str, cfg: PromptConfig,
                  subject: str | None = None) -> tuple[list[int], int, int, int | None]:
    """Prompt token ids, the indices of the question's first and last token among them, and the index of
    the last token of ``subject`` (first occurrence in the question; ``None`` without a subject)."""
    fast = _is_fast(tokenizer)
    if uses_chat_template(tokenizer, cfg):
        text = _template_text(tokenizer, _messages(question, cfg), True)
        # apply_chat_template(tokenize=True) tokenizes the rendered text without adding special tokens.
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
        core = question.strip()
        q_start = text.rfind(core)
    else:
        enc = tokenizer(question, add_special_tokens=True, return_offsets_mapping=fast)
        core, q_start = question, 0
    ids = list(enc["input_ids"])
    if not ids:
        raise TokenizationError(f"the question {question[:60]!r} tokenizes to nothing")
    first, last = 0, len(ids) - 1
    subject_end = None
    if fast and q_start >= 0:
        q_stop = q_start + len(core)
        spans = enc["offset_mapping"]
        inside = [i for i, (s, e) in enumerate(spans) if e > s and s < q_stop and e > q_start]
        if inside:
            first, last = inside[0], inside[-1]
        if subject is not None and subject.strip() in core:
            s_at = q_start + core.find(subject.strip())
            s_stop = s_at + len(subject.strip())
            covering = [i for i, (s, e) in enumerate(spans) if e > s and s < s_stop and e > s_at]
            subject_end = covering[-1] if covering else None
    elif subject is not None:
        subject_end = _subject_end_slow(tokenizer, ids, question, subject)
    if subject is not None and subject_end is None:
        raise TokenizationError(f"could not find the tokens of the subject {subject!r} in the prompt")
    return ids, first, last, subject_end


def _subject_end_slow(tokenizer: Any, ids: list[int], question: str, subject: str) -> int | None:
    """Subject end for tokenizers without offsets: the first prefix of ``ids`` whose decoding contains the
    question up to the end of the subject."""
    q = question.strip()
    target = q[: q.find(subject.strip()) + len(subject.strip())]
    for i in range(len(ids)):
        if target in tokenizer.decode(ids[: i + 1]):
            return i
    return None


def _is_fast(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "is_fast", False))


def end_token_id(tokenizer: Any, cfg: PromptConfig) -> int | None:
    """The token that ends an assistant turn (chat) or the EOS token (raw text)."""
    if uses_chat_template(tokenizer, cfg):
        msgs = _messages("q", cfg) + [{"role": "assistant", "content": _SENTINEL}]
        try:
            text = _template_text(tokenizer, msgs, False)
        except Exception:  # noqa: BLE001 - templates may refuse some message layouts
            text = ""
        i = text.find(_SENTINEL)
        if i >= 0:
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
            special |= {int(k) for k, v in added.items() if getattr(v, "special", False)}
            for tid in tokenizer(text[i + len(_SENTINEL):], add_special_tokens=False)["input_ids"]:
                if tid in special:
                    return int(tid)
    eos = getattr(tokenizer, "eos_token_id", None)
    return None if eos is None else int(eos)


def prepare_request(tokenizer: Any, request: EditRequest, cfg: PromptConfig,
                    max_length: int | None = None) -> PreparedRequest:
    """Tokenize one request; raise a clear error for empty or over-long targets."""
    prompt_ids, q_start, q_end, s_end = encode_prompt(tokenizer, request.question, cfg, request.subject)
    enc = tokenizer(request.answer, add_special_tokens=False, return_offsets_mapping=_is_fast(tokenizer))
    target = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc.get("offset_mapping", [])] or _approx_offsets(tokenizer, target)
    if not target:
        raise TokenizationError(f"{where(request.id)}the answer tokenizes to nothing")
    eot = end_token_id(tokenizer, cfg)
    if eot is not None:
        target.append(eot)
        offsets.append((len(request.answer), len(request.answer)))
    total = len(prompt_ids) + len(target)
    if max_length is not None and total > max_length:
        raise TokenizationError(
            f"{where(request.id)}prompt + answer are {total} tokens, more than the model's context "
            f"of {max_length}; shorten the answer"
        )
    return PreparedRequest(request=request, prompt_ids=tuple(prompt_ids), target_ids=tuple(target),
                           question_start=q_start, question_end=q_end, target_offsets=tuple(offsets), end_token_id=eot,
                           subject_end=s_end)


def _approx_offsets(tokenizer: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character spans from incremental decoding (slow tokenizers have no offset mapping)."""
    out, pos = [], 0
    for i in range(len(ids)):
        n = len(tokenizer.decode(list(ids[: i + 1])))
        out.append((pos, n))
        pos = n
    return out


def context_length(model: Any, tokenizer: Any) -> int | None:
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None) or \
        getattr(getattr(model, "config", None), "n_positions", None)
    return int(n) if n else None
