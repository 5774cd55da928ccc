"""Scores of one record: the long-answer metrics (ours and the reference's definitions), the short sub-question
metrics, and the teacher-forced token accuracy of the new answer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import EditConfig, PromptConfig
from ..model.generation import generate
from ..model.prompts import prepare_request
from ..model.state import input_device
from ..types import EditRequest
from . import metrics
from .datasets import EvalRecord

#: tokens generated beyond the new answer's length when it is asked back, so a longer answer is seen (and scored)
ANSWER_SLACK = 16
#: ROUGE-L F1 at or above which an edit's answer counts as reproduced
REPRODUCED = 0.9


def answer_budget(tokenizer: Any, request: EditRequest, prompt: PromptConfig) -> int:
    """How many tokens to generate when ``request``'s question is asked back: its new answer's length plus
    :data:`ANSWER_SLACK`."""
    return len(prepare_request(tokenizer, request, prompt).target_ids) + ANSWER_SLACK


def reproduction(model: nn.Module, tokenizer: Any, requests: list[EditRequest], prompt: PromptConfig
                 ) -> list[tuple[str, float]]:
    """Each request's question asked (greedy, one at a time): the answer and its ROUGE-L F1 against the new answer
    (reproduced: at least :data:`REPRODUCED`)."""
    out = []
    for r in requests:
        answer = generate(model, tokenizer, r.question, prompt, max_new_tokens=answer_budget(tokenizer, r, prompt))[0]
        out.append((answer, metrics.rouge(r.answer, answer)["rougeL_f"]))
    return out


@torch.no_grad()
def token_accuracy(model: nn.Module, tokenizer: Any, record: EvalRecord, config: EditConfig) -> float:
    """Fraction of the new answer's tokens that are the model's argmax given the prompt and the answer so far."""
    prep = prepare_request(tokenizer, record.request, config.prompt)
    ids = torch.tensor([prep.ids], device=input_device(model))
    logits = model(input_ids=ids).logits[0]
    pos = torch.arange(prep.prompt_len - 1, len(prep.ids) - 1, device=ids.device)
    return float((logits[pos].argmax(-1) == ids[0, pos + 1]).float().mean())


class Scorer:
    """``long``: every metric of a long answer; ``short``: a sub-question's. ``compat`` adds the reference's
    definitions, ``embed`` the MiniLM similarity."""

    def __init__(self, compat: bool = True, embed: bool = True) -> None:
        self.m = metrics
        self.compat = compat
        self.embedder = metrics.Embedder() if embed else None

    def long(self, reference: str, prediction: str) -> dict[str, float]:
        m = self.m
        out = {"bleu": m.bleu(reference, prediction), **m.rouge(reference, prediction),
               "entropy": m.ngram_entropy(prediction)}
        if self.embedder is not None:
            out["similarity"] = self.embedder.similarity(reference, prediction)
        if self.compat:
            out["compat_bleu"] = m.compat_bleu(reference, prediction)
            out.update({f"compat_{k}": v for k, v in m.compat_rouge(reference, prediction).items()})
            if self.embedder is not None:
                out["compat_similarity"] = self.embedder.compat_similarity(reference, prediction)
        return out

    def short(self, reference: str, prediction: str) -> dict[str, float]:
        r = self.m.rouge(reference, prediction)
        out = {k: r[k] for k in ("rouge1_r", "rougeL_r", "rougeL_f")}
        if self.compat:
            out.update({f"compat_{k}": v for k, v in self.m.compat_rouge(reference, prediction).items()})
        return out


def mean_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
