from __future__ import annotations

import json

import pytest
import torch

from anyedit.eval import locality
from anyedit.eval.locality import Fact, FactualProbe, LocalityProbe, builtin_facts
from anyedit.model.prompts import encode_prompt
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


def test_factual_probes_are_many_short_questions_no_edit_is_told_to_keep():
    facts = builtin_facts()
    assert len(facts) >= 30 and len({f.question for f in facts}) == len(facts)
    assert not {f.question for f in facts} & set(builtin_prompts("preserve"))
    assert "What is the capital of France?" in {f.question for f in facts}
    seven = Fact("What is 7 times 8?", ("56", "fifty-six"))
    assert seven.is_right("7 times 8 is 56.") and seven.is_right("Fifty-six")
    assert not seven.is_right("It is 156.") and not seven.is_right("5600")
    assert Fact("q", ("Paris",)).is_right("the city of paris") and not Fact("q", ("Paris",)).is_right("Parisian")


def test_factual_probe_counts_the_known_answers_an_edit_loses(llama, monkeypatch):
    """Only questions the recorded model answers right count; a damaged model that answers them otherwise loses
    them, and the report names them."""
    model, tok = llama
    questions = ["What is the answer?", "Write a poem about rain.", "Who are you?"]
    probe = FactualProbe(model, tok, facts=[Fact(q, ("zzzz",)) for q in questions], max_new_tokens=6)
    assert probe.known == [] and probe.compare(model).to_dict()["all_kept"] == 1
    words = [tok.decode(a, skip_special_tokens=True).split()[0] for a in probe._ask(model, probe.facts)[1]]
    probe = FactualProbe(model, tok, facts=[Fact(q, (w,)) for q, w in zip(questions, words)], max_new_tokens=6)
    rep = probe.compare(model)
    assert (rep.n_probes, rep.known, rep.kept, rep.lost) == (3, 3, 3, [])
    # the decision margin: never negative, and at most the gap at the answer's first token (the smallest over the
    # answer up to the right word), computed here from the prompt alone
    assert len(probe.margins) == 3 and all(m >= 0 for m in probe.margins)
    with torch.no_grad():
        for q, m in zip(questions, probe.margins):
            ids = torch.tensor([encode_prompt(tok, q, probe.prompt_cfg)[0]])
            top = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1).topk(2).values
            assert m <= float(top[0] - top[1]) + 1e-5
    monkeypatch.setattr(locality, "FRAGILE_MARGIN", float("inf"))  # every known fact counts as a near-tie
    with torch.no_grad():
        w = model.model.layers[1].mlp.down_proj.weight
        saved = w.clone()
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 5)
    try:
        rep = probe.compare(model)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert rep.kept < 3 and len(rep.lost) == 3 - rep.kept and rep.to_dict()["all_kept"] == 0
    assert rep.to_dict()["kept_fraction"] == rep.kept / 3
    assert rep.fragile == 3 and rep.lost_fragile == len(rep.lost)
    assert rep.firm == (0, 0) and rep.cell() == f"{rep.kept}/3 (firm 0/0)"
    assert all("(unedited margin " in x for x in rep.lost) and "near-ties" in rep.summary()
    # 4 known, 1 of them a near-tie; 2 lost, 1 of them that near-tie: 2 of the 3 firm ones kept
    rep = locality.FactualReport(n_probes=5, known=4, kept=2, lost=["a", "b"], fragile=1, lost_fragile=1)
    assert rep.firm == (2, 3) and rep.cell() == "2/4 (firm 2/3)"
    assert (rep.to_dict()["firm_kept"], rep.to_dict()["firm_known"]) == (2, 3)
