"""Where does an edit stop carrying over? Per-chunk diagnosis of an edited answer under another wording, and of the
probe answers an edit changes.

* :func:`chunk_carryover`: for one wording of the question and the chunks of an edit, each chunk's teacher-forced
  token accuracy (everything before the chunk fed as the new answer has it) and how many of its tokens greedy
  decoding reproduces from the chunk's start before it first departs. Low accuracy on the first chunk only: the
  answer never starts under this wording; a right first chunk and wrong later ones: later chunks' edits do not fire
  in the other context.
* :func:`probe_divergences`: for the probes an edit changed (:class:`~anyedit.eval.locality.LocalityProbe`), the
  first answer token whose argmax changed under teacher forcing, and the position of the probe whose hidden state
  entering the edited layer is closest (cosine) to that of one of the edit's anchors: the input they share (an
  edit of that layer or later does not change these states).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..config import PromptConfig
from ..model.arch import get_spec
from ..model.generation import generate_ids
from ..model.prompts import prepare_request
from ..model.state import input_device
from ..model.trace import trace
from ..types import EditRequest
from .locality import LocalityProbe


@dataclass
class ChunkCarry:
    start: int  # the chunk's answer tokens [start, end)
    end: int
    tf_accuracy: float  # teacher-forced: fraction of the chunk's tokens that are the argmax
    greedy_prefix: float  # greedy from the chunk's start: leading tokens reproduced / chunk length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def chunk_carryover(model: nn.Module, tokenizer: Any, question: str, answer: str, spans: Sequence[tuple[int, int]],
                    prompt: PromptConfig | None = None) -> list[ChunkCarry]:
    """Per chunk (``spans``: ``(start, end)`` in the answer's tokens, e.g. an edit's ``reports``), how well ``model``
    produces it after ``question`` (any wording) with the answer before the chunk given."""
    prompt = prompt or PromptConfig()
    prep = prepare_request(tokenizer, EditRequest(question, answer), prompt)
    target, p = list(prep.target_ids), prep.prompt_len
    if spans and max(e for _, e in spans) > len(target):
        raise ValueError(f"chunk end {max(e for _, e in spans)} is past the answer's {len(target)} tokens")
    ids = torch.tensor([prep.ids], device=input_device(model))
    argmax = model(input_ids=ids).logits[0].argmax(-1).tolist()
    starts = [list(prep.ids[: p + s]) for s, _ in spans]
    greedy = generate_ids(model, tokenizer, starts, prompt, max(e - s for s, e in spans), batch_size=8) \
        if spans else []
    out = []
    for (s, e), g in zip(spans, greedy):
        tf = sum(argmax[p + i - 1] == target[i] for i in range(s, e)) / (e - s)
        lead = 0
        while lead < min(len(g), e - s) and g[lead] == target[s + lead]:
            lead += 1
        out.append(ChunkCarry(start=s, end=e, tf_accuracy=tf, greedy_prefix=lead / (e - s)))
    return out


@torch.no_grad()
def probe_divergences(model: nn.Module, probe: LocalityProbe, layer: int,
                      anchor_rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[dict[str, Any]]:
    """For each probe whose teacher-forced argmax changed on ``model`` (edited; ``probe`` recorded the unedited
    one): the prompt, the first changed answer token (index, the token before and after), and the probe position
    (in the prompt or in the answer, up to the first change) whose hidden state entering ``layer`` (>= 1) is
    closest to that of one of the edit's anchors (``anchor_rows``: per edit text, its token ids and anchor
    positions), with that cosine and both tokens."""
    if layer < 1:
        raise ValueError("probe_divergences needs the edited layer >= 1 (it compares the states entering it)")
    spec = get_spec(model)
    _, argmax = probe._teacher_forced(model)
    tok = probe.tokenizer
    anchor_keys, anchor_tokens = [], []
    for ids, positions in anchor_rows:
        keys = trace(model, spec, [ids], layer - 1, layer - 1)[0].outputs
        anchor_keys.append(keys[list(positions)])
        anchor_tokens += [ids[i] for i in positions]
    bank = torch.nn.functional.normalize(torch.cat(anchor_keys), dim=-1) if anchor_keys else None
    out = []
    for q, enc, ans, now in zip(probe.prompts, probe.encoded, probe.answers, argmax):
        changed = [i for i, (a, b) in enumerate(zip(ans, now.tolist())) if a != b]
        if not changed:
            continue
        first = changed[0]
        row: dict[str, Any] = {"prompt": q, "first_changed": first, "n_changed": len(changed),
                               "was": tok.decode([ans[first]]), "now": tok.decode([int(now[first])])}
        if bank is not None:
            seq = list(enc) + list(ans[: first + 1])
            states = trace(model, spec, [seq], layer - 1, layer - 1)[0].outputs
            sim = torch.nn.functional.normalize(states, dim=-1) @ bank.T
            pos, which = divmod(int(sim.argmax()), sim.shape[1])
            row.update(shared_cosine=float(sim[pos, which]), probe_token=tok.decode([seq[pos]]),
                       shared_in="prompt" if pos < len(enc) else "answer",
                       anchor_token=tok.decode([anchor_tokens[which]]))
        out.append(row)
    return out
