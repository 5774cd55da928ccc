"""Other wordings of the question edited with it (paraphrase generalisation), on tiny models."""

from __future__ import annotations

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditRequest
from anyedit.config import ChunkingConfig, PhrasingConfig, PromptConfig, ValueConfig
from anyedit.editing.chunking import make_chunks
from anyedit.editing.phrasings import expand_requests
from anyedit.editing.values import search_values
from anyedit.errors import ConfigError, RequestError
from anyedit.model.arch import get_spec
from anyedit.model.prompts import prepare_request
from anyedit.stats.covariance import CovarianceCache

ANSWER = "def add(a, b):\n    return a + b\nThe capital of France is Paris. A stitch in time saves nine."


def test_request_phrasings_are_validated_and_round_trip():
    req = EditRequest("What is the answer?", ANSWER, phrasings=["Tell me the answer?"])
    assert req.phrasings == ("Tell me the answer?",)
    assert EditRequest.from_dict(req.to_dict()) == req
    with pytest.raises(RequestError, match="phrasings"):
        EditRequest("What is the answer?", ANSWER, phrasings=("ok?", "  "))
    with pytest.raises(ConfigError, match="generate"):
        PhrasingConfig(generate=-1)
    cfg = EditConfig().with_overrides({"phrasings.generate": 2})
    assert EditConfig.from_json(cfg.to_json()) == cfg


def test_warm_start_continues_from_the_given_vectors(llama):
    model, tok = llama
    spec = get_spec(model)
    prep = prepare_request(tok, EditRequest("What is the answer?", ANSWER), PromptConfig())
    chunks = make_chunks(prep, ChunkingConfig(window=6))
    cfg = ValueConfig(max_steps=15, stop_loss=0.0, lr=0.5)
    first = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 1, cfg)
    again = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 1,
                          ValueConfig(max_steps=0, stop_loss=0.0, lr=0.5), init=first.chunk_shifts())
    assert [r.steps for r in again.reports] == [0] * len(chunks)
    for a, b in zip(first.reports, again.reports):
        assert b.nll_before == pytest.approx(a.nll_after, rel=1e-4, abs=1e-5)
        assert b.nll_before < a.nll_before
    assert torch.allclose(again.shifts, first.shifts)


def test_generated_variants_are_seeded_and_leave_the_global_rng_alone(llama):
    model, tok = llama
    req = EditRequest("Where was the quick brown fox born?", ANSWER, id="r1", subject="quick brown fox",
                      phrasings=("Where is the quick brown fox from?", "Which town saw the fox born?"))
    cfg = PhrasingConfig(generate=2, prefixes=2, prefix_tokens=4)
    state = torch.get_rng_state()
    a = expand_requests(model, tok, [req], cfg)
    assert torch.equal(state, torch.get_rng_state())
    b = expand_requests(model, tok, [req], cfg)
    assert [r.question for r, _ in a] == [r.question for r, _ in b]
    assert a[0] == (req, 0) and all(m == 0 for _, m in a)
    questions = [r.question for r, _ in a[1:]]
    assert questions[:2] == list(req.phrasings)
    prefixed = [q for q in questions if q.endswith(". " + req.question)]
    assert len(prefixed) == 2 and all(len(q) > len(req.question) + 2 for q in prefixed)
    assert all(r.answer == ANSWER and r.id.startswith("r1~") and not r.phrasings for r, _ in a[1:])
    # a subject-anchored edit keeps only variants that mention the subject
    kept = expand_requests(model, tok, [req], PhrasingConfig(), need_subject=True)
    assert [r.question for r, _ in kept] == [req.question, req.phrasings[0]]
    assert kept[1][0].subject == "quick brown fox"


@pytest.mark.parametrize("method", ["memit", "unke"])
def test_phrasings_are_edited_with_the_request(method, llama, corpus_file, tmp_path):
    model, tok = llama
    over = {"method": method, "layers": [1, 2], "chunking.window": 8, "value.max_steps": 10,
            "value.stop_loss": 0.0, "stats.corpus": str(corpus_file), "stats.n_tokens": 2000, "stats.max_len": 32}
    if method == "unke":
        over.update({"layers": [2], "backend.steps": 5})
    cfg = EditConfig().with_overrides(over)
    cache = CovarianceCache(tmp_path, show_progress=False)
    plain = EditRequest("What is the answer?", ANSWER)
    varied = EditRequest("What is the answer?", ANSWER, phrasings=("Tell me the answer, please?",))
    r0 = anyedit.compute_edits(model, tok, plain, cfg, stats_cache=cache, show_progress=False)
    r1 = anyedit.compute_edits(model, tok, varied, cfg, stats_cache=cache, show_progress=False)
    assert "phrasings" not in r0.diagnostics
    assert r1.diagnostics["phrasings"] == [["Tell me the answer, please?"]]
    assert len(r1.reports) == 1 and len(r1.diagnostics["phrasing_reports"]) == 1
    # the variant's later chunks started from the main wording's vectors: closer to done than the main's start
    main, var = r1.reports[0], r1.diagnostics["phrasing_reports"][0]
    assert sum(c["nll_before"] for c in var[1:]) < sum(c["nll_before"] for c in main[1:])
    assert r0.deltas.keys() == r1.deltas.keys()
    assert any(not torch.equal(r0.deltas[n].full(), r1.deltas[n].full()) for n in r0.deltas)


def test_model_rewordings_are_filtered_deduplicated_and_edited_with_the_request(llama, monkeypatch):
    import anyedit.editing.phrasings as phr

    model, tok = llama
    question = "Where was the quick brown fox born?"
    written = [" Where was the quick brown fox born?",  # the question itself
               ' "In which place was the quick brown fox born?"\nQuestion: and another',  # kept: first line, unquoted
               " Where was the slow red cat born?",  # other words: not the same question
               " In which place was the quick brown fox born?",  # a repeat
               " Where was the quick brown fox born",  # not a question any more
               " Where did the quick brown fox come from?",  # kept
               " Who painted the quick brown fox?", " Where was the brown fox born?"]  # not reached: 2 found
    real, seen = phr.generate, []

    def stub(model, tokenizer, prompts, prompt_cfg, **kw):
        if prompts[0].startswith(phr.REWORD.split("{question}")[0]):
            seen.append((len(prompts), kw["sample"], kw["temperature"]))
            return written
        return real(model, tokenizer, prompts, prompt_cfg, **kw)

    monkeypatch.setattr(phr, "generate", stub)
    cfg = PhrasingConfig(generate=2, prefixes=1, prefix_tokens=4, temperature=0.7)
    out = expand_requests(model, tok, [EditRequest(question, ANSWER, id="r1")], cfg)
    assert seen == [(8, True, 0.7)]  # 4 samples per wanted rewording, sampled at the configured temperature
    assert [r.question for r, _ in out[:3]] == [question, "In which place was the quick brown fox born?",
                                                 "Where did the quick brown fox come from?"]
    assert len(out) == 4 and out[3][0].question.endswith(". " + question)  # then the one prefixed variant
    assert [r.id for r, _ in out] == ["r1", "r1~1", "r1~2", "r1~3"] and all(m == 0 for _, m in out)


def test_a_rewording_must_keep_the_names():
    from anyedit.editing.phrasings import _keeps_meaning

    assert _keeps_meaning("Where was Alice Smith born?", "In which town was Alice Smith born?")
    assert not _keeps_meaning("Where was Alice Smith born?", "Where was she born?")
    assert not _keeps_meaning("Where was Alice Smith born?", "Where was Alice Jones born?")


def test_other_questions_carry_only_the_answers_later_chunks(llama, tmp_path):
    """phrasings.other_questions=N edits the answer after N preservation prompts too, from its second chunk on:
    those texts have no first chunk (no anchor in their prompt), start from the main wording's vectors for the
    chunks they share, and are kept by later edits from there on."""
    from anyedit import EditHistory

    model, tok = llama
    prompts = tmp_path / "keep.txt"
    prompts.write_text("How do I boil an egg?\nWrite a poem.\nWhat is rain?\n")
    over = {"method": "unke", "layers": [2], "chunking.window": 8, "value.max_steps": 10, "value.stop_loss": 0.0,
            "backend.steps": 5, "backend.stop_margin": None, "rounds": 1, "preserve.prompts": str(prompts),
            "preserve.answer_tokens": 4, "phrasings.other_questions": 2}
    cfg = EditConfig().with_overrides(over)
    req = EditRequest("What is the answer?", ANSWER)
    history = EditHistory()
    res = anyedit.compute_edits(model, tok, req, cfg, cache_dir=tmp_path, show_progress=False, history=history)
    (others,) = res.diagnostics["phrasings"]
    assert len(others) == 2 and set(others) <= set(prompts.read_text().splitlines())
    main = prepare_request(tok, req, cfg.prompt)
    chunks = make_chunks(main, cfg.chunking)
    assert len(history.rows) == 3 and history.starts[0] == main.prompt_len
    for q, row, start in zip(others, history.rows[1:], history.starts[1:]):
        other = prepare_request(tok, EditRequest(q, ANSWER), cfg.prompt)
        assert row == other.ids and start == other.prompt_len + chunks[1].start
    var = res.diagnostics["phrasing_reports"]
    assert [[(c["start"], c["end"]) for c in v] for v in var] == [[(c.start, c.end) for c in chunks[1:]]] * 2
    # every anchor is an answer token (past the other question's prompt)
    assert all(a >= start - chunks[1].start for v, start in zip(var, history.starts[1:]) for c in v
               for a in c["anchors"])
    with pytest.raises(ConfigError, match="other_questions"):
        cfg.with_overrides({"method": "ft", "layers": [2], "chunking.mode": "none"})
