from __future__ import annotations

import json

import pytest
import torch

from anyedit.eval.locality import LocalityProbe
from anyedit.stats.preserve import builtin_prompts


def test_probe_sets_are_disjoint_and_unedited_model_agrees_with_itself(llama):
    model, tok = llama
    assert not set(builtin_prompts("probe")) & set(builtin_prompts("preserve"))
    probe = LocalityProbe(model, tok, prompts=["What is the answer?", "Write a poem about rain."], max_new_tokens=8)
    rep = probe.compare(model)
    assert rep.token_agreement == 1.0 and rep.exact == 1.0 and abs(rep.nll_change) < 1e-5 and not rep.changed
    assert rep.answer_rougeL_f == 1.0


def test_a_damaged_model_is_reported(llama):
    model, tok = llama
    probe = LocalityProbe(model, tok, prompts=["What is the answer?", "Write a poem about rain."], max_new_tokens=8)
    with torch.no_grad():
        w = model.model.layers[1].mlp.down_proj.weight
        saved = w.clone()
        w.add_(torch.randn_like(w) * 5)
    try:
        rep = probe.compare(model)
        after = probe._generate(model)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert rep.token_agreement < 1.0 and rep.nll_change > 0 and rep.changed
    from anyedit.eval.metrics import rouge

    old = [tok.decode(a, skip_special_tokens=True) for a in probe.answers]
    new = [tok.decode(a, skip_special_tokens=True) for a in after]
    expected = [1.0 if o == n else rouge(o, n)["rougeL_f"] for o, n in zip(old, new)]
    assert rep.answer_rougeL_f == pytest.approx(sum(expected) / len(expected)) and rep.answer_rougeL_f < 1.0


def test_an_unreadable_answers_cache_is_regenerated(llama, tmp_path, caplog):
    from anyedit.config import PreserveConfig, PromptConfig
    from anyedit.stats.preserve import chat_source

    model, tok = llama
    cfg = PreserveConfig(n_prompts=3, answer_tokens=4)
    rows = list(chat_source(model, tok, cfg, PromptConfig(), tmp_path).rows())
    (path,) = (tmp_path / "preserve").iterdir()
    path.write_text('[[1, 2], [3')  # a write cut short by an older version
    with caplog.at_level("WARNING", logger="anyedit.stats.preserve"):
        assert list(chat_source(model, tok, cfg, PromptConfig(), tmp_path).rows()) == rows
    assert "unreadable" in caplog.text and len(json.loads(path.read_text())) == 3
