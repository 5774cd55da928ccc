"""Other wordings of a question, edited together with it (paraphrase generalisation, issue: locality).

An edit trained on one wording of a question is often not triggered by another. MEMIT optimised its
vectors over several random context prefixes for this reason; here a request can be expanded into
variants with the same answer: the user's own ``EditRequest.phrasings``, rewordings the model itself
writes (``PhrasingConfig.generate``) and model-written prefixes in front of the question
(``PhrasingConfig.prefixes``). Nothing here looks at a benchmark's paraphrases.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

from torch import nn

from ..config import PhrasingConfig, PromptConfig
from ..model.generation import generate, seeded
from ..types import EditRequest

log = logging.getLogger(__name__)

# A few-shot prompt in raw text: small chat models asked to "rewrite this question" answer it instead
# (measured on SmolLM2-135M-Instruct), while the few-shot pattern gives rewordings.
REWORD = ("Question: How old is the Eiffel Tower?\nThe same question in other words: What is the age of the "
          "Eiffel Tower?\n\nQuestion: Who wrote the novel Dracula?\nThe same question in other words: Which author "
          "is behind the book Dracula?\n\nQuestion: What does a nurse do at work?\nThe same question in other "
          "words: What are the job duties of a nurse?\n\nQuestion: {question}\nThe same question in other words:")
PREFIX_STARTS = ("The", "Therefore", "Because", "I", "You")  # MEMIT's context-template starts


def _clean(text: str) -> str:
    line = next((x for x in text.strip().splitlines() if x.strip()), "")
    return line.strip().strip('"\u201c\u201d').strip()


def _norm(q: str) -> str:
    return re.sub(r"\W+", " ", q.casefold()).strip()


def _keeps_meaning(original: str, variant: str) -> bool:
    """A cheap guard against sampled "rewordings" that ask something else: every capitalised word after
    the first (names) and at least half of the longer words of the original must still be there."""
    words = re.findall(r"[\w'-]+", original)
    have = set(_norm(variant).split())
    names = [w for w in words[1:] if w[:1].isupper()]
    content = [w for w in words if len(w) > 4]

    def present(w: str) -> bool:
        return all(t in have for t in _norm(w).split())

    if not all(present(w) for w in names):
        return False
    return not content or sum(present(w) for w in content) >= len(content) / 2


def rewordings(model: nn.Module, tokenizer: Any, question: str, n: int, cfg: PhrasingConfig) -> list[str]:
    """Up to ``n`` distinct rewordings of ``question`` written by the model (few-shot, sampled, seeded),
    each checked to keep the question's names and most of its words."""
    if n <= 0:
        return []
    n_tok = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    seen, out = {_norm(question)}, []
    with seeded(cfg.seed):
        texts = generate(model, tokenizer, [REWORD.format(question=question)] * (4 * n),
                         PromptConfig(chat_template=False), max_new_tokens=2 * n_tok + 8, sample=True,
                         temperature=cfg.temperature)
    for t in texts:
        q = _clean(t)
        if q and _norm(q) not in seen and q.endswith("?") == question.strip().endswith("?") and \
                _keeps_meaning(question, q):
            seen.add(_norm(q))
            out.append(q)
        if len(out) == n:
            break
    if len(out) < n:
        log.info("the model wrote %d usable rewordings of %r (asked for %d)", len(out), question[:60], n)
    return out


def prefixed(model: nn.Module, tokenizer: Any, question: str, n: int, cfg: PhrasingConfig) -> list[str]:
    """``n`` variants ``"<short model-written text>. <question>"`` (MEMIT's context templates)."""
    if n <= 0:
        return []
    starts = [PREFIX_STARTS[i % len(PREFIX_STARTS)] for i in range(n)]
    with seeded(cfg.seed + 1):
        texts = generate(model, tokenizer, starts, PromptConfig(chat_template=False),
                         max_new_tokens=cfg.prefix_tokens, sample=True, temperature=cfg.temperature)
    out = []
    for s, t in zip(starts, texts):
        text = " ".join(f"{s}{t}".split()).rstrip(".")
        out.append(f"{text}. {question}")
    return out


def expand_requests(model: nn.Module, tokenizer: Any, requests: list[EditRequest], cfg: PhrasingConfig,
                    need_subject: bool = False) -> list[tuple[EditRequest, int]]:
    """Each request followed by its variants, as ``(request, index of its main request)``.

    A variant keeps the request's subject when it mentions it; with ``need_subject`` (subject-anchored
    edits) variants that do not mention it are left out."""
    out: list[tuple[EditRequest, int]] = []
    for i, req in enumerate(requests):
        out.append((req, i))
        variants = list(req.phrasings)
        variants += rewordings(model, tokenizer, req.question, cfg.generate, cfg)
        variants += prefixed(model, tokenizer, req.question, cfg.prefixes, cfg)
        subject = req.subject.strip() if req.subject else None
        if need_subject:
            variants = [q for q in variants if subject and subject in q]
        for j, q in enumerate(variants):
            rid = f"{req.id or i}~{j + 1}"
            keep = subject if subject and subject in q else None
            out.append((replace(req, question=q, id=rid, phrasings=(), subject=keep), i))
        if variants:
            log.info("request %s: editing %d other wording(s) with it: %s", req.id or i, len(variants),
                     "; ".join(repr(v[:60]) for v in variants))
    return out
