from __future__ import annotations

import pytest

from anyedit.config import ChunkingConfig, PromptConfig
from anyedit.editing.chunking import (
    make_chunks,
    sentence_spans,
    sentence_starts,
    shared_prefixes,
    snap_spans,
    window_spans,
)
from anyedit.editing.history import EditHistory
from anyedit.errors import ConfigError, RequestError
from anyedit.model.prompts import prepare_request
from anyedit.types import EditRequest

from .tiny import tiny_tokenizer


@pytest.mark.parametrize("n,w,o", [(1, 40, 0), (40, 40, 0), (41, 40, 0), (100, 7, 3), (10, 4, 3), (5, 4, 3)])
def test_windows_cover_every_token_once_per_stride(n, w, o):
    spans = window_spans(n, w, o)
    covered = set()
    for s, e in spans:
        assert 0 <= s < e <= n and e - s <= w
        covered |= set(range(s, e))
    assert covered == set(range(n))
    assert spans[-1][1] == n
    # no span lies inside the previous one (the reference's overlap bug)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s1 == s0 + w - o and e1 > e0


def test_window_examples():
    assert window_spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert window_spans(3, 40) == [(0, 3)]
    with pytest.raises(ValueError):
        window_spans(10, 4, 4)
    with pytest.raises(ValueError):
        window_spans(0, 4)


def test_sentence_starts():
    text = "One two. Three four!\nFive\n\nSix? seven"
    assert [text[i] for i in sentence_starts(text)] == ["T", "F", "S", "s"]


def test_sentence_spans_cut_at_boundaries_and_merge_up_to_window():
    tok = tiny_tokenizer()
    text = "The quick brown fox. A stitch in time saves nine.\nThe capital of France is Paris."
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = [tuple(o) for o in enc["offset_mapping"]]
    spans = sentence_spans(offs, text, window=1000)
    assert spans == [(0, len(offs))]  # everything merges under a large window
    spans = sentence_spans(offs, text, window=12)  # no sentence is longer than 12 tokens, no two fit in 12
    assert len(spans) == 3 and all(e - s <= 12 for s, e in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(offs)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # each chunk opens with its sentence's first word (the byte-level token " A" carries the space before it)
    assert [text[offs[s][0]:offs[s][1]].strip() for s, _ in spans] == ["The", "A", "The"]
    assert [text[offs[s][0]:offs[e - 1][1]].strip() for s, e in spans] == [
        "The quick brown fox.", "A stitch in time saves nine.", "The capital of France is Paris."]


def test_sentence_spans_when_the_space_is_its_own_token():
    text = "Hi there. Bye now."
    offs = [(0, 2), (2, 8), (8, 9), (9, 10), (10, 13), (13, 17), (17, 18)]  # "Hi" " there" "." " " "Bye" " now" "."
    assert sentence_spans(offs, text, window=4) == [(0, 4), (4, 7)]  # the cut falls before "Bye", not before the space


def _fox(tok):
    """One short request, prepared with the default prompt (the anchor tests' common input)."""
    return prepare_request(tok, EditRequest("What is the answer?", "The quick brown fox jumps over the lazy dog."),
                           PromptConfig())


def test_make_chunks_places_anchors():
    tok = tiny_tokenizer()
    prep = _fox(tok)
    p = prep.prompt_len
    chunks = make_chunks(prep, ChunkingConfig(window=4))
    assert chunks[0].anchors == (p - 1,)
    assert [c.anchors for c in chunks[1:]] == [(p + c.start - 1,) for c in chunks[1:]]
    assert chunks[-1].end == len(prep.target_ids)
    q = make_chunks(prep, ChunkingConfig(window=4, first_anchor="question_end"))
    assert q[0].anchors == (prep.question_end,) and prep.question_end < p - 1
    spread = make_chunks(prep, ChunkingConfig(window=4, first_anchor="question"))
    assert spread[0].anchors == tuple(range(prep.question_start, prep.question_end + 1))
    assert tok.decode([prep.prompt_ids[i] for i in spread[0].anchors]) == "What is the answer?"
    assert spread[1:] == chunks[1:]
    single = make_chunks(prep, ChunkingConfig(mode="none"))
    assert len(single) == 1 and single[0].anchors == (p - 1,) and single[0].end == len(prep.target_ids)


def test_question_tokens_shared_with_another_edit_are_not_anchors():
    """Two questions that begin alike have the same hidden states over their common prefix: the first chunk is
    spread only over the tokens after it; another wording of the same request does not count; the same question
    asked again (its whole prompt shared) keeps every question token."""
    tok = tiny_tokenizer()
    cfg, pc = ChunkingConfig(window=4, first_anchor="question"), PromptConfig()
    a = prepare_request(tok, EditRequest("What is the capital of Peru?", "Lima, a city."), pc)
    b = prepare_request(tok, EditRequest("What is the capital of Chad?", "It is N'Djamena."), pc)
    texts = [a.ids, b.ids]
    common = next(i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y)
    assert a.question_start < common <= a.question_end
    assert shared_prefixes(texts, [0, 1]) == [common, common]
    assert shared_prefixes(texts, [0, 0]) == [0, 0]  # two wordings of one request
    assert shared_prefixes([a.ids], [0], others=[b.ids]) == [common]
    chunks = make_chunks(a, cfg, shared=common)
    assert chunks[0].anchors == tuple(range(common, a.question_end + 1))
    assert tok.decode([a.ids[i] for i in chunks[0].anchors]).strip() == "Peru?"
    assert chunks[1:] == make_chunks(a, cfg)[1:]
    again = shared_prefixes([a.ids], [0], others=[a.ids])[0]
    assert make_chunks(a, cfg, shared=again) == make_chunks(a, cfg)


def test_anchor_span_spreads_later_chunks_over_the_tokens_before_them():
    tok = tiny_tokenizer()
    prep = _fox(tok)
    p = prep.prompt_len
    one = make_chunks(prep, ChunkingConfig(window=4))
    three = make_chunks(prep, ChunkingConfig(window=4, anchor_span=3))
    assert [(c.start, c.end) for c in three] == [(c.start, c.end) for c in one]
    assert three[0].anchors == one[0].anchors  # the first chunk follows first_anchor
    assert [c.anchors for c in three[1:]] == [tuple(range(p + c.start - 3, p + c.start)) for c in three[1:]]
    # never back over the previous chunk's anchors: with a span longer than the window they stay disjoint, in order
    wide = make_chunks(prep, ChunkingConfig(window=2, first_anchor="question", anchor_span=5))
    flat = [a for c in wide for a in c.anchors]
    assert flat == sorted(set(flat)) and wide[2].anchors[0] == wide[1].anchors[-1] + 1
    assert all(c.anchors[-1] == p + c.start - 1 for c in wide[1:])
    with pytest.raises(ConfigError, match="anchor_span"):
        ChunkingConfig(anchor_span=0)


def test_subject_last_anchor_is_the_subjects_last_token():
    tok = tiny_tokenizer()
    req = EditRequest("Where was the quick brown fox born?", "The lazy dog.", subject="quick brown fox")
    prep = prepare_request(tok, req, PromptConfig())
    chunks = make_chunks(prep, ChunkingConfig(window=4, first_anchor="subject_last"))
    (a,) = chunks[0].anchors
    assert a == prep.subject_end
    assert tok.decode(list(prep.prompt_ids[: a + 1])).endswith("Where was the quick brown fox")
    assert prep.question_start < a < prep.question_end
    # later chunks are unchanged
    assert chunks[1:] == make_chunks(prep, ChunkingConfig(window=4))[1:]
    # raw-text prompts find it too
    raw = prepare_request(tiny_tokenizer(chat=False), req, PromptConfig())
    assert tiny_tokenizer(chat=False).decode(list(raw.prompt_ids[: raw.subject_end + 1])).endswith("brown fox")


def test_subject_last_needs_a_subject_that_occurs_in_the_question():
    tok = tiny_tokenizer()
    prep = prepare_request(tok, EditRequest("What is the answer?", "The lazy dog.", id="r7"), PromptConfig())
    assert prep.subject_end is None
    with pytest.raises(ConfigError, match="subject_last.*r7"):
        make_chunks(prep, ChunkingConfig(first_anchor="subject_last"))
    with pytest.raises(RequestError, match="does not occur in the question"):
        EditRequest("What is the answer?", "The lazy dog.", subject="fox")
    req = EditRequest.from_dict({"question": "Who is the fox?", "answer": "A dog.", "subject": "fox"})
    assert EditRequest.from_dict(req.to_dict()) == req and req.subject == "fox"


def test_subject_end_without_offsets_matches_the_fast_tokenizer():
    from anyedit.model.prompts import _subject_end_slow

    tok = tiny_tokenizer()
    req = EditRequest("Where was the quick brown fox born?", "The lazy dog.", subject="quick brown fox")
    prep = prepare_request(tok, req, PromptConfig())
    assert _subject_end_slow(tok, list(prep.prompt_ids), req.question, req.subject) == prep.subject_end


def test_snap_moves_each_boundary_to_the_best_scored_start_within_reach():
    spans = [(0, 4), (4, 8), (8, 10)]
    scores = [0, 1, 9, 2, 0, 5, 0, 7, 1, 3]
    # boundary 4 may go to 3..5 (best 5); boundary 8 to 7..9 (best 7)
    assert snap_spans(spans, scores, 1) == [(0, 5), (5, 7), (7, 10)]
    # reach 2: boundary 4 can now take 2 (score 9); boundary 8 stays within 6..9
    assert snap_spans(spans, scores, 2) == [(0, 2), (2, 7), (7, 10)]
    assert snap_spans(spans, scores, 0) == spans
    # ties keep the original boundary
    assert snap_spans(spans, [0] * 10, 2) == spans


@pytest.mark.parametrize("seed", range(20))
def test_snapped_spans_stay_contiguous_and_within_reach(seed):
    import random

    rng = random.Random(seed)
    n = rng.randint(2, 60)
    spans = window_spans(n, rng.randint(3, 12)) if seed % 2 else \
        list(zip([0, *(c := sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, 6)))))], [*c, n]))
    snap = rng.randint(1, 4)
    out = snap_spans(spans, [rng.random() for _ in range(n)], snap)
    assert len(out) == len(spans) and out[0][0] == 0 and out[-1][1] == n
    assert all(s < e for s, e in out) and all(a[1] == b[0] for a, b in zip(out, out[1:]))
    assert all(abs(a[0] - b[0]) <= snap for a, b in zip(out, spans))


def test_make_chunks_snaps_anchors_to_the_cheapest_key_only_when_asked():
    tok = tiny_tokenizer()
    prep = _fox(tok)
    p, n = prep.prompt_len, len(prep.target_ids)
    plain = make_chunks(prep, ChunkingConfig(window=4))
    scores = [0.0] * (p + n)
    scores[p + 4] = 1.0  # the key at target token 4 is the cheapest to edit: chunk 2 starts after it
    snapped = make_chunks(prep, ChunkingConfig(window=4, snap=1), scores)
    assert snapped[1].anchors == (p + 4,) and (snapped[0].end, snapped[1].start) == (5, 5)
    assert [c.anchors for c in snapped[2:]] == [c.anchors for c in plain[2:]]
    assert make_chunks(prep, ChunkingConfig(window=4, snap=1)) == plain  # no scores: unchanged
    assert make_chunks(prep, ChunkingConfig(window=4), scores) == plain  # snap 0: scores ignored


def test_snap_config_is_validated():
    with pytest.raises(ConfigError, match="snap.*overlap"):
        ChunkingConfig(window=10, overlap=2, snap=1)
    with pytest.raises(ConfigError, match="snap.*half the window"):
        ChunkingConfig(window=10, snap=5)
    with pytest.raises(ConfigError, match="snap"):
        ChunkingConfig(snap=-1)
    assert ChunkingConfig.from_dict(ChunkingConfig(window=10, snap=3).to_dict()).snap == 3


def test_question_tokens_that_begin_a_preservation_prompt_are_not_anchors(llama, tmp_path):
    """With chunking.skip_preserve_prefix, the first chunk is not spread over the leading question tokens that a
    preservation prompt begins with too ("What is the"): their hidden states are those of that prompt."""
    import anyedit
    from anyedit import EditConfig

    model, tok = llama
    prompts = tmp_path / "keep.txt"
    prompts.write_text("What is the weather like?\nWrite a poem.\n")
    req = EditRequest("What is the capital of Peru?", "Lima, a city by the sea.")
    base = {"method": "unke", "layers": [2], "chunking.window": 8, "chunking.first_anchor": "question",
            "value.max_steps": 2, "backend.steps": 2, "preserve.prompts": str(prompts), "preserve.answer_tokens": 4}
    first = {}
    for skip in (False, True):
        cfg = EditConfig().with_overrides({**base, "chunking.skip_preserve_prefix": skip})
        res = anyedit.compute_edits(model, tok, req, cfg, cache_dir=tmp_path, show_progress=False)
        prep = prepare_request(tok, req, cfg.prompt)
        first[skip] = tok.decode([prep.ids[i] for i in res.reports[0][0]["anchors"]]).strip()
    assert first == {False: "What is the capital of Peru?", True: "capital of Peru?"}


def test_shared_prefix_rule_chooses_whose_texts_count(llama, tmp_path):
    """In a batch of two questions that begin alike, the first chunk skips their common prefix by default
    (chunking.shared_prefix="all"); "earlier" counts only earlier stack members, so a batch spreads it over the
    whole question; on a stack, "earlier" still skips the prefix shared with the earlier member, "none" does not."""
    import anyedit
    from anyedit import EditConfig

    model, tok = llama
    reqs = [EditRequest("What is the capital of Peru?", "Lima, a city by the sea."),
            EditRequest("What is the capital of Chad?", "It is N'Djamena.")]
    base = {"method": "unke", "layers": [2], "chunking.window": 8, "chunking.first_anchor": "question",
            "value.max_steps": 2, "backend.steps": 2, "backend.preserve_weight": 0}

    def first_anchors(rule: str, requests: list[EditRequest], history: EditHistory | None = None):
        cfg = EditConfig().with_overrides({**base, "chunking.shared_prefix": rule})
        res = anyedit.compute_edits(model, tok, requests, cfg, cache_dir=tmp_path, show_progress=False,
                                    history=history)
        prep = prepare_request(tok, requests[0], cfg.prompt)
        return tok.decode([prep.ids[i] for i in res.reports[0][0]["anchors"]]).strip(), res

    assert first_anchors("all", reqs)[0] == "Peru?"
    assert first_anchors("earlier", reqs)[0] == "What is the capital of Peru?"
    _, earlier = first_anchors("all", reqs[1:])

    def history() -> EditHistory:  # the Chad edit made before (a fresh copy: a call adds its own rows)
        h = EditHistory()
        h.merge(earlier.history)
        return h

    assert first_anchors("earlier", reqs[:1], history())[0] == "Peru?"
    assert first_anchors("none", reqs[:1], history())[0] == "What is the capital of Peru?"
    cfg = EditConfig().with_overrides({"chunking.shared_prefix": "earlier"})
    assert EditConfig.from_dict(cfg.to_dict()).chunking.shared_prefix == "earlier"
    with pytest.raises(ConfigError, match="shared_prefix"):
        EditConfig().with_overrides({"chunking.shared_prefix": "batch"})


def test_first_window_ties_only_the_answers_first_tokens_to_the_question():
    """chunking.first_window=f splits the first chunk after f tokens; the rest of it is anchored on those answer
    tokens (never on the prompt, which every question ends with), and later chunks keep their spans."""
    tok = tiny_tokenizer()
    prep = _fox(tok)
    p = prep.prompt_len
    plain = make_chunks(prep, ChunkingConfig(window=8, first_anchor="question", anchor_span=6))
    split = make_chunks(prep, ChunkingConfig(window=8, first_anchor="question", anchor_span=6, first_window=3))
    assert [(c.start, c.end) for c in split[:2]] == [(0, 3), (3, 8)]
    assert split[0].anchors == plain[0].anchors  # the question's tokens
    assert split[1].anchors == (p, p + 1, p + 2)  # the answer's first three tokens, not the prompt's last ones
    assert [(c.start, c.end) for c in split[2:]] == [(c.start, c.end) for c in plain[1:]]
    assert split[2].anchors[0] > split[1].anchors[-1]
    assert make_chunks(prep, ChunkingConfig(window=8, first_window=8)) == make_chunks(prep, ChunkingConfig(window=8))
    with pytest.raises(ConfigError, match="first_window"):
        ChunkingConfig(first_window=-1)
