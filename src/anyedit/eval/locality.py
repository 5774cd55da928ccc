"""Did the edit leave everything else alone? Probe prompts answered before and after an edit.

A :class:`LocalityProbe` records, on the unedited model, the greedy answers to a set of unrelated chat
prompts (by default the built-in ``probe`` prompts, which no edit or preset is tuned on) and their
teacher-forced NLL. :meth:`LocalityProbe.compare` then reports on the edited model:

* ``token_agreement``: the fraction of the pre-edit answer tokens that are still the edited model's
  argmax under teacher forcing (EasyEdit's locality; late divergence is not punished twice);
* ``exact``: the fraction of probes whose free greedy answer is unchanged, token for token;
* ``answer_rougeL_f``: how close the free answers stay when they change: the mean ROUGE-L F1 (rouge-score)
  of each answer after the edit against the same prompt's answer before (1 when identical);
* ``nll_change``: mean change of the per-token NLL of the pre-edit answers (positive = less likely).

A :class:`FactualProbe` asks short questions with one right answer (the built-in ``factual_probes.json``:
capitals, arithmetic, dates, units, authors; none of them a preservation prompt) and reports how many of those the
unedited model answers right are still answered right after the edit (:class:`FactualReport`). For each, it also
records the unedited model's *decision margin*: the smallest gap between the two most likely next tokens
(log-probabilities) along its greedy answer, up to the token that completes the right answer. A fact answered
right by a near-tie (below :data:`FRAGILE_MARGIN`) can be flipped by any change to the model, however small; the
report says how many of the known and of the lost facts were such near-ties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import nn

from ..config import PromptConfig
from ..model.batching import pad_batch
from ..model.generation import generate, generate_ids
from ..model.prompts import encode_prompt
from ..model.state import input_device
from ..stats.preserve import builtin_prompts


@dataclass
class LocalityReport:
    token_agreement: float
    exact: float
    nll_change: float
    n_probes: int
    changed: list[str]
    answer_rougeL_f: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"locality on {self.n_probes} unrelated prompts: {100 * self.token_agreement:.1f}% of answer tokens "
                f"kept, {100 * self.exact:.0f}% of answers identical, NLL change {self.nll_change:+.3f}/token")


class LocalityProbe:
    def __init__(self, model: nn.Module, tokenizer: Any, prompt: PromptConfig | None = None,
                 prompts: Sequence[str] | None = None, max_new_tokens: int = 32, batch_size: int = 20) -> None:
        self.tokenizer = tokenizer
        self.prompt_cfg = prompt or PromptConfig()
        self.prompts = list(prompts) if prompts is not None else builtin_prompts("probe")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.encoded = [encode_prompt(tokenizer, q, self.prompt_cfg)[0] for q in self.prompts]
        self.answers = self._generate(model)
        self.nll, self.argmax = self._teacher_forced(model)

    def _generate(self, model: nn.Module) -> list[list[int]]:
        return generate_ids(model, self.tokenizer, self.encoded, self.prompt_cfg, self.max_new_tokens,
                            batch_size=self.batch_size)

    def _batches(self, seqs: list[list[int]], left: bool, device: torch.device, pad: int):
        for b in range(0, len(seqs), self.batch_size):
            batch = seqs[b: b + self.batch_size]
            ids, mask = pad_batch(batch, device, pad, left)
            yield ids, mask, ids.shape[1], len(batch)

    @torch.no_grad()
    def _teacher_forced(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per probe: NLL and argmax at each pre-edit answer token."""
        seqs = [p + a for p, a in zip(self.encoded, self.answers)]
        nll, arg = [], []
        device = input_device(model)
        i = 0
        for ids, mask, _w, n in self._batches(seqs, left=False, device=device, pad=0):
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for j in range(n):
                p, a = len(self.encoded[i]), len(self.answers[i])
                pos = torch.arange(p - 1, p + a - 1, device=device)
                tgt = ids[j, p: p + a]
                nll.append(-logp[j, pos, tgt].cpu())
                arg.append(logp[j, pos].argmax(-1).cpu())
                i += 1
        return nll, arg

    def compare(self, model: nn.Module) -> LocalityReport:
        """Measure ``model`` (normally the edited one) against the recorded answers."""
        nll, arg = self._teacher_forced(model)
        agree = sum(int((a == torch.tensor(ans)).sum()) for a, ans in zip(arg, self.answers))
        total = sum(len(a) for a in self.answers)
        d_nll = float(torch.cat(nll).mean() - torch.cat(self.nll).mean())
        new = self._generate(model)
        same = [a == b for a, b in zip(new, self.answers)]
        changed = [q for q, s in zip(self.prompts, same) if not s]
        return LocalityReport(token_agreement=agree / max(total, 1), exact=sum(same) / len(same),
                              nll_change=d_nll, n_probes=len(self.prompts), changed=changed,
                              answer_rougeL_f=self._answer_similarity(new, same))

    def _answer_similarity(self, new: list[list[int]], same: list[bool]) -> float | None:
        """Mean ROUGE-L F1 of each new answer against the old one (None without rouge-score installed)."""
        from .metrics import rouge

        def text(ids: list[int]) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        try:
            scores = [1.0 if s else rouge(text(old), text(now))["rougeL_f"]
                      for old, now, s in zip(self.answers, new, same)]
        except ImportError:  # pragma: no cover - rouge-score comes with the eval extra
            return None
        return sum(scores) / len(scores)


@dataclass(frozen=True)
class Fact:
    """A question with one right answer, written in any of ``answers`` (matched as a whole word, any case)."""

    question: str
    answers: tuple[str, ...]

    def is_right(self, answer: str) -> bool:
        return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, re.IGNORECASE) for a in self.answers)


def builtin_facts() -> list[Fact]:
    data = json.loads(resources.files("anyedit").joinpath("data/factual_probes.json").read_text(encoding="utf-8"))
    return [Fact(d["question"], tuple(d["answers"])) for d in data["probes"]]


FRAGILE_MARGIN = 0.1  # nats: a known fact whose decision margin is below this is a near-tie


@dataclass
class FactualReport:
    n_probes: int  # questions asked
    known: int  # answered right by the unedited model: the ones that count
    kept: int  # of those, still answered right
    lost: list[str] = field(default_factory=list)  # "question -> the answer now (unedited margin m)"
    fragile: int = 0  # of the known, answered right by a near-tie (decision margin < FRAGILE_MARGIN)
    lost_fragile: int = 0  # of the lost, near-ties

    @property
    def firm(self) -> tuple[int, int]:
        """(kept, known) among the facts the unedited model answers by a margin of at least FRAGILE_MARGIN: the
        ones an edit can only lose by changing them, not by tipping a near-tie."""
        known = self.known - self.fragile
        return known - (len(self.lost) - self.lost_fragile), known

    def cell(self) -> str:
        """For a table: ``kept/known (firm kept/known)``."""
        return f"{self.kept}/{self.known} (firm {self.firm[0]}/{self.firm[1]})"

    def to_dict(self) -> dict[str, Any]:
        """The report, with ``kept_fraction`` (kept / known; 1 when none is known), ``all_kept`` (1 or 0) and the
        firm facts' counts (``firm_kept``, ``firm_known``)."""
        return {**asdict(self), "kept_fraction": self.kept / self.known if self.known else 1.0,
                "all_kept": int(self.kept == self.known), "firm_kept": self.firm[0], "firm_known": self.firm[1]}

    def summary(self) -> str:
        line = (f"factual probes: {self.kept}/{self.known} still answered right (of {self.n_probes} asked, the "
                f"unedited model answers {self.known} right, {self.fragile} of them by a near-tie, a margin under "
                f"{FRAGILE_MARGIN} nats")
        if self.lost:
            line += f"; {self.lost_fragile} of the {len(self.lost)} lost were near-ties"
        return line + ")" + "".join(f"\n  lost: {x}" for x in self.lost)


class FactualProbe:
    """Records which of ``facts`` (default: the built-in ones) the model answers right (greedy), to compare later."""

    def __init__(self, model: nn.Module, tokenizer: Any, prompt: PromptConfig | None = None,
                 facts: Sequence[Fact] | None = None, max_new_tokens: int = 24, batch_size: int = 16) -> None:
        self.tokenizer, self.prompt_cfg = tokenizer, prompt or PromptConfig()
        self.facts = list(facts) if facts is not None else builtin_facts()
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        encoded, ids = self._ask(model, self.facts)
        right = [f.is_right(tokenizer.decode(a, skip_special_tokens=True)) for f, a in zip(self.facts, ids)]
        self.known = [f for f, r in zip(self.facts, right) if r]
        #: per known fact, the unedited model's decision margin (nats)
        self.margins = [self._margin(model, f, e, a) for f, e, a, r in zip(self.facts, encoded, ids, right) if r]

    def _ask(self, model: nn.Module, facts: Sequence[Fact]) -> tuple[list[list[int]], list[list[int]]]:
        """The questions of ``facts`` as the prompt encodes them, and the model's greedy answer tokens to each."""
        encoded = [encode_prompt(self.tokenizer, f.question, self.prompt_cfg)[0] for f in facts]
        return encoded, generate_ids(model, self.tokenizer, encoded, self.prompt_cfg, self.max_new_tokens,
                                     batch_size=self.batch_size) if encoded else []

    @torch.no_grad()
    def _margin(self, model: nn.Module, fact: Fact, encoded: Sequence[int], answer: Sequence[int]) -> float:
        """The smallest top-1 minus top-2 log-probability along ``answer`` (greedy), up to the token that completes
        the right answer."""
        k = next(k for k in range(1, len(answer) + 1)
                 if fact.is_right(self.tokenizer.decode(answer[:k], skip_special_tokens=True)))
        ids = torch.tensor([[*encoded, *answer[:k]]], device=input_device(model))
        logp = torch.log_softmax(model(input_ids=ids).logits[0, len(encoded) - 1: len(encoded) - 1 + k].float(), -1)
        top = logp.topk(2, dim=-1).values
        return float((top[:, 0] - top[:, 1]).min())

    def compare(self, model: nn.Module) -> FactualReport:
        """Ask ``model`` (normally the edited one) the questions the recorded model answered right."""
        answers = [self.tokenizer.decode(a, skip_special_tokens=True) for a in self._ask(model, self.known)[1]]
        lost = [(f, a, m) for f, a, m in zip(self.known, answers, self.margins) if not f.is_right(a)]
        return FactualReport(n_probes=len(self.facts), known=len(self.known), kept=len(self.known) - len(lost),
                             lost=[f"{f.question} -> {a.strip()[:80]!r} (unedited margin {m:.2f})"
                                   for f, a, m in lost],
                             fragile=sum(m < FRAGILE_MARGIN for m in self.margins),
                             lost_fragile=sum(m < FRAGILE_MARGIN for _, _, m in lost))


def says_paris(model: nn.Module, tokenizer: Any, prompt: PromptConfig | None = None) -> bool:
    """Whether the model's greedy answer to "What is the capital of France?" names Paris: the one fact every table
    of this project reports on its own (it is also one of the built-in factual probes)."""
    return "Paris" in generate(model, tokenizer, "What is the capital of France?", prompt, 20)[0]
