"""Per-chunk diagnosis of an answer under a wording, and of the probes an edit changes (tiny models)."""

from __future__ import annotations

import pytest
import torch

from anyedit.config import PromptConfig
from anyedit.eval.diagnosis import chunk_carryover, probe_divergences
from anyedit.eval.locality import LocalityProbe
from anyedit.model.prompts import prepare_request
from anyedit.types import EditRequest


def _memorise(model, tok, pairs: list[tuple[str, str]]) -> list[int]:
    """Train ``model`` until it answers each question with its answer (every token the argmax); their lengths."""
    preps = [prepare_request(tok, EditRequest(q, a), PromptConfig()) for q, a in pairs]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        losses, right = [], True
        for prep in preps:
            ids, p = torch.tensor([prep.ids]), prep.prompt_len
            logits = model(input_ids=ids).logits[0, p - 1: -1]
            right &= bool((logits.argmax(-1) == ids[0, p:]).all())
            losses.append(torch.nn.functional.cross_entropy(logits, ids[0, p:]))
        if right:
            return [len(prep.target_ids) for prep in preps]
        opt.zero_grad()
        sum(losses).backward()
        opt.step()
    raise AssertionError("the tiny model did not learn the answers")


def test_a_memorised_answer_is_carried_by_every_chunk_and_not_after_another_question(llama):
    model, tok = llama
    q, answer, other_q = "What is the answer?", "The fox runs over the dog and the cat.", "Write a poem about rain."
    n, _ = _memorise(model, tok, [(q, answer), (other_q, "Rain falls on a quiet town at night.")])
    spans = [(0, 4), (4, 8), (8, n)]
    own = chunk_carryover(model, tok, q, answer, spans)
    assert [(c.start, c.end) for c in own] == spans
    assert all(c.tf_accuracy == 1.0 and c.greedy_prefix == 1.0 for c in own)
    other = chunk_carryover(model, tok, other_q, answer, spans)  # that question has its own answer
    assert other[0].tf_accuracy < 1.0 and other[0].greedy_prefix < 1.0
    with pytest.raises(ValueError, match="past the answer"):
        chunk_carryover(model, tok, q, answer, [(0, n + 5)])


def test_changed_probes_are_named_with_their_first_changed_token_and_the_state_they_share(llama):
    model, tok = llama
    probe = LocalityProbe(model, tok, prompts=["What is the answer?", "Write a poem about rain."], max_new_tokens=8)
    assert probe_divergences(model, probe, 2, []) == []  # nothing changed
    anchor = prepare_request(tok, EditRequest("What is the answer?", "No."), PromptConfig())
    with torch.no_grad():
        w = model.model.layers[2].mlp.down_proj.weight
        saved = w.clone()
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 5)
    try:
        rows = probe_divergences(model, probe, 2, [(anchor.ids, [anchor.question_end])])
    finally:
        with torch.no_grad():
            w.copy_(saved)
    by_prompt = {r["prompt"]: r for r in rows}
    assert set(by_prompt) == set(probe.prompts)  # the damage changes both
    # the anchor sits on the question's last token, whose state the probe asking the same question has too
    assert by_prompt["What is the answer?"]["shared_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert by_prompt["What is the answer?"]["shared_in"] == "prompt"
    assert by_prompt["Write a poem about rain."]["shared_cosine"] < 0.9999
    assert all(0 <= r["first_changed"] < 8 and r["n_changed"] >= 1 for r in rows)
    with pytest.raises(ValueError, match="layer >= 1"):
        probe_divergences(model, probe, 0, [])
