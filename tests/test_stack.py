"""Edit stacks on a tiny Llama: order, history, apply/revert bit for bit, refusals, pop."""

from __future__ import annotations

import json

import pytest

from anyedit import EditConfig, EditRequest
from anyedit.editing.stack import EditStack, is_stack
from anyedit.errors import ConfigError, EditApplyError, EditFormatError, FingerprintMismatchError
from anyedit.stats.covariance import CovarianceCache

from .tiny import same_weights, tiny_model, weights_of

R1 = EditRequest("What is the answer?", "The capital of France is Paris.", id="r1")
R2 = EditRequest("Who wrote it?", "It was written by a fox in the lazy dog's garden.", id="r2")



@pytest.fixture
def stacked(llama, tmp_path):
    """A stack of two UnKE edits made one after the other (the second on the model with the first applied)."""
    model, tok = llama
    cfg = EditConfig().with_overrides({"method": "unke", "layers": [2], "chunking.window": 4, "value.max_steps": 3,
                                       "backend.steps": 5, "rounds": 1, "preserve.n_prompts": 4,
                                       "preserve.answer_tokens": 4})
    stack = EditStack(tmp_path / "stack")
    cache = CovarianceCache(tmp_path / "c", False)
    first = stack.edit(model, tok, R1, cfg, stats_cache=cache, show_progress=False)
    second = stack.edit(model, tok, R2, cfg, stats_cache=cache, show_progress=False)
    return model, tok, stack, first, second, cfg, cache


def test_a_stack_keeps_its_edits_in_order_with_their_history(stacked):
    model, tok, stack, first, second, cfg, cache = stacked
    state = weights_of(model)
    assert is_stack(stack.directory) and len(stack) == 2
    assert [e["questions"] for e in stack.entries()] == [[R1.question], [R2.question]]
    # the second edit was computed on the model with the first applied: its fingerprints are of those weights
    with first.applied(model):
        second.check_model(model)
    with pytest.raises(FingerprintMismatchError):
        second.check_model(model)
    # its history holds the first edit's text, and the stack's holds both
    assert len(first.history.rows) == 1 and len(stack.history().rows) == 2
    assert stack.history().rows[0] == first.history.rows[0]
    # reopened from disk: the same members, applied in order, reverted bit for bit
    again = EditStack(stack.directory)
    with first.applied(model), second.applied(model):
        expected = weights_of(model)
    with again.applied(model):
        assert same_weights(model, expected)
    assert same_weights(model, state)


def test_another_model_or_a_changed_member_is_refused_and_nothing_stays_applied(stacked, tmp_path):
    model, tok, stack, *_ = stacked
    other = tiny_model("llama", seed=7)
    before = weights_of(other)
    with pytest.raises(FingerprintMismatchError, match="differs in"):
        EditStack(stack.directory).apply(other)
    assert same_weights(other, before)
    # a member whose tensors were changed: refused when the stack is opened for use, nothing applied
    state = weights_of(model)
    member = stack.directory / stack.entries()[1]["dir"]
    data = bytearray((member / "deltas.safetensors").read_bytes())
    data[-1] ^= 1
    (member / "deltas.safetensors").write_bytes(bytes(data))
    with pytest.raises(EditFormatError, match="member 2"):
        EditStack(stack.directory).apply(model)
    assert same_weights(model, state)
    # a missing member, and a member swapped for another edit
    (member / "edit.json").unlink()
    with pytest.raises(EditFormatError, match="member 2 .* is missing"):
        EditStack(stack.directory).apply(model)
    first_dir = stack.directory / stack.entries()[0]["dir"]
    man = json.loads((first_dir / "edit.json").read_text())
    man["reports"] = []
    (first_dir / "edit.json").write_text(json.dumps(man))
    with pytest.raises(EditFormatError, match="member 1 .* not the edit the stack recorded"):
        EditStack(stack.directory).members()
    assert same_weights(model, state)


def test_pop_removes_the_last_edit_and_a_new_one_takes_its_place(stacked):
    model, tok, stack, first, second, cfg, cache = stacked
    state = weights_of(model)
    with pytest.raises(EditApplyError, match="revert it before popping"):
        with stack.applied(model):
            stack.pop()
    assert same_weights(model, state)
    popped = stack.pop()
    assert popped["questions"] == [R2.question] and len(stack) == 1
    assert not (stack.directory / popped["dir"]).exists()
    with EditStack(stack.directory).applied(model):
        with first.applied(model, verify=False):
            pass
        second.check_model(model)  # the stack now leaves exactly the weights the first edit did
    third = stack.edit(model, tok, R2, cfg, stats_cache=cache, show_progress=False)
    assert len(EditStack(stack.directory)) == 2 and third.history.rows == second.history.rows
    stack.pop()
    stack.pop()
    with pytest.raises(EditFormatError, match="empty"):
        stack.pop()
    assert same_weights(model, state)


def test_a_directory_that_is_not_a_stack_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(EditFormatError, match="not an edit stack"):
        EditStack(tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "stack.json").write_text("{}")
    with pytest.raises(EditFormatError, match="not an anyedit stack index"):
        EditStack(tmp_path / "y")


@pytest.mark.parametrize("method", ["unke", "memit"])
def test_a_later_edit_keeps_the_earlier_ones_text_when_given_the_history(llama, tmp_path, corpus_file, method):
    """Given the history, the second edit changes the edited layer's output at the first edit's anchors (where its
    answer is written) less than without it (UnKE keeps the earlier texts' layer outputs; MEMIT keeps the earlier
    keys in its regulariser)."""
    from anyedit import EditHistory, compute_edits
    from anyedit.model.arch import get_spec
    from anyedit.model.prompts import prepare_request
    from anyedit.model.trace import trace

    model, tok = llama
    over = {"method": method, "layers": [2], "chunking.window": 4, "value.max_steps": 10, "rounds": 1,
            "backend.history_weight": 10.0, "stats.corpus": str(corpus_file), "stats.n_tokens": 500,
            "stats.max_len": 32}
    if method == "unke":
        over.update({"backend.steps": 30, "backend.lr": 0.01, "preserve.n_prompts": 4,
                     "preserve.answer_tokens": 4})
    else:
        over.update({"backend.mom2_weight": 1.0})
    cfg = EditConfig().with_overrides(over)
    cache = CovarianceCache(tmp_path / "c", False)
    history = EditHistory()
    first = compute_edits(model, tok, R1, cfg, stats_cache=cache, show_progress=False, history=history)
    prep = prepare_request(tok, R1, cfg.prompt)
    spec = get_spec(model)
    moved = {}
    anchors = [a for r in first.reports[0] for a in r["anchors"]]
    with first.applied(model):
        before = trace(model, spec, [prep.ids], 2, 2)[0].outputs[anchors]
        for name, h in (("with", history), ("without", None)):
            second = compute_edits(model, tok, R2, cfg, stats_cache=cache, show_progress=False, history=h)
            with second.applied(model):
                after = trace(model, spec, [prep.ids], 2, 2)[0].outputs[anchors]
                moved[name] = (after - before).norm(dim=1).mean()
    assert len(history.rows) == 2  # the first edit's text, then the second's (added by the call that had it)
    assert moved["with"] < 0.7 * moved["without"], moved


def test_consolidate_replaces_the_members_with_one_edit_of_all_their_requests(stacked):
    model, tok, stack, first, second, cfg, cache = stacked
    state = weights_of(model)
    # the base model is required: refused with the stack applied, and nothing changes
    with stack.applied(model):
        with pytest.raises(EditApplyError, match="revert it before consolidating"):
            stack.consolidate(model, tok, cfg, stats_cache=cache, show_progress=False)
    with first.applied(model):
        with pytest.raises(FingerprintMismatchError, match="needs the base model"):
            stack.consolidate(model, tok, cfg, stats_cache=cache, show_progress=False)
    assert len(EditStack(stack.directory)) == 2 and same_weights(model, state)
    # the default settings: the last member's, with at least 300 update steps
    assert stack.consolidation_config().backend.steps == 300
    assert stack.consolidation_config().with_overrides({"backend.steps": 5}) == cfg
    old_dirs = [stack.directory / e["dir"] for e in stack.entries()]
    # R1 again with a new answer: the latest answer to a question is the one kept
    r1_new = EditRequest(R1.question, "The answer is forty-two, and it always was.", id="r1b")
    stack.edit(model, tok, r1_new, cfg, stats_cache=cache, show_progress=False)
    result = stack.consolidate(model, tok, cfg, stats_cache=cache, show_progress=False)
    assert [r.question for r in result.requests] == [R2.question, R1.question]
    assert [r.answer for r in result.requests] == [R2.answer, r1_new.answer]
    assert result.history is not None and len(result.history.rows) == 2
    again = EditStack(stack.directory)
    assert len(again) == 1 and again.entries()[0]["consolidates"] == 3
    assert again.entries()[0]["questions"] == [R2.question, R1.question]
    assert not any(d.exists() for d in old_dirs)
    # one batch edit from the base weights: applying the stack is applying that edit, reverted bit for bit
    with result.applied(model):
        expected = weights_of(model)
    assert not same_weights(model, expected)
    with again.applied(model):
        assert same_weights(model, expected)
    assert same_weights(model, state)
    # the stack goes on from there
    stack.edit(model, tok, R2, cfg, stats_cache=cache, show_progress=False)
    assert len(EditStack(stack.directory)) == 2
    with EditStack(stack.directory).applied(model):
        pass
    assert same_weights(model, state)


def test_edit_consolidates_the_stack_every_k_edits(stacked):
    """``edit(..., consolidate_every=K)``: once K members were added since the last consolidation, the stack becomes
    one edit of all their requests; not before; a bad K is refused before anything is computed."""
    model, tok, stack, first, second, cfg, cache = stacked
    state = weights_of(model)
    with pytest.raises(ConfigError, match="consolidate_every"):
        stack.edit(model, tok, R1, cfg, consolidate_every=-1, stats_cache=cache, show_progress=False)
    assert len(stack) == 2 and stack.since_consolidation() == 2
    r3 = EditRequest("Where is it?", "Under the old bridge by the river.", id="r3")
    stack.edit(model, tok, r3, cfg, consolidate_every=4, stats_cache=cache, show_progress=False)
    assert len(stack) == 3 and "consolidates" not in stack.entries()[-1]  # 3 < 4: not yet
    stack.edit(model, tok, R1, cfg, consolidate_every=3, stats_cache=cache, show_progress=False)
    entries = EditStack(stack.directory).entries()
    assert len(entries) == 1 and entries[0]["consolidates"] == 4
    assert entries[0]["questions"] == [R2.question, r3.question, R1.question]
    assert stack.since_consolidation() == 0
    stack.edit(model, tok, R2, cfg, consolidate_every=3, stats_cache=cache, show_progress=False)
    assert len(stack) == 2 and stack.since_consolidation() == 1  # counted from the consolidated member
    assert same_weights(model, state)


def test_an_empty_stack_cannot_be_consolidated(llama, tmp_path):
    model, tok = llama
    stack = EditStack(tmp_path / "empty")
    with pytest.raises(EditFormatError, match="empty"):
        stack.consolidate(model, tok)
