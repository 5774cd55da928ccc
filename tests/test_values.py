"""Value search: the cached implementation equals the full recompute; vectors compose as the paper says."""

from __future__ import annotations

import pytest
import torch

from anyedit.config import ChunkingConfig, PromptConfig, ValueConfig
from anyedit.editing.chunking import make_chunks
from anyedit.editing.values import _cached_step, _full_step, search_values
from anyedit.model.arch import get_spec
from anyedit.model.hooks import add_to_output, replayed_layers
from anyedit.model.prompts import prepare_request
from anyedit.types import EditRequest

ANSWER = "def add(a, b):\n    return a + b\nThe capital of France is Paris. A stitch in time saves nine."


def _setup(model, tok, window=6, first_anchor="prompt_end"):
    spec = get_spec(model)
    prep = prepare_request(tok, EditRequest("What is the answer?", ANSWER), PromptConfig())
    chunks = make_chunks(prep, ChunkingConfig(window=window, first_anchor=first_anchor))
    return spec, prep, chunks


@pytest.mark.parametrize("first_anchor", ["prompt_end", "question_end", "question"])
@pytest.mark.parametrize("k", [0, 2])
def test_cached_step_logits_equal_full_recompute(tiny, first_anchor, k):
    model, tok = tiny
    spec, prep, chunks = _setup(model, tok, first_anchor=first_anchor)
    assert len(chunks) >= 3
    seq = torch.tensor([prep.ids])
    torch.manual_seed(1)
    prev_pos = [a for c in chunks[:k] for a in c.anchors]
    prev = (prev_pos, torch.randn(len(prev_pos), 64) if prev_pos else None)
    chunk = chunks[k]
    delta = torch.randn(len(chunk.anchors), 64)
    last = prep.prompt_len + chunk.end - 2
    path = spec.layer_path(1)
    with torch.no_grad():
        f_step, f_h = _full_step(model, seq, path, 1, spec, chunk, last, prev)
        c_step, c_h = _cached_step(model, seq, path, 1, spec, chunk, last, prev)
        torch.testing.assert_close(c_h, f_h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c_step(delta), f_step(delta), rtol=1e-4, atol=1e-4)
        # and the vectors matter: a different delta changes the logits
        assert not torch.allclose(c_step(delta), c_step(torch.zeros_like(delta)), atol=1e-3)


@pytest.mark.parametrize("first_anchor,dtype", [("prompt_end", torch.float32), ("question", torch.float64)])
def test_cached_and_full_search_give_the_same_vectors(tiny, first_anchor, dtype):
    """fp32 for the paper's one-anchor chunks. Spread anchors are compared in fp64: Adam's first steps are
    lr * sign(grad), so a gradient component that is ~0 flips sign on fp32 rounding noise."""
    model, tok = tiny
    model.to(dtype)
    spec, prep, chunks = _setup(model, tok, first_anchor=first_anchor)
    results = {}
    for cached in (True, False):
        cfg = ValueConfig(cache_prefix=cached, max_steps=10, lr=0.05, stop_loss=0.0)
        results[cached] = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2, cfg)
    a, b = results[True].shifts, results[False].shifts
    row = 0
    for c in chunks:  # relative difference of each chunk's vector(s)
        n = len(c.anchors)
        da, db = a[row:row + n], b[row:row + n]
        rel = (da - db).norm() / db.norm()
        assert rel <= 1e-4, f"cached and full value search differ by {rel:.2e} on chunk {c}"
        assert db.norm() > 0
        row += n
    for ra, rb in zip(results[True].reports, results[False].reports):
        assert ra.nll_after == pytest.approx(rb.nll_after, rel=1e-4)


def test_search_lowers_every_chunk_loss_and_respects_clamp(llama):
    model, tok = llama
    spec, prep, chunks = _setup(model, tok)
    cfg = ValueConfig(max_steps=30, lr=0.5, clamp_norm=4.0, stop_loss=0.0)
    vt = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2, cfg)
    for r in vt.reports:
        assert r.nll_after < r.nll_before
        assert r.delta_norm <= 4.0 * r.h_norm * (1 + 1e-5)
    assert vt.positions == [a for c in chunks for a in c.anchors]
    torch.testing.assert_close(vt.targets, vt.h_init + vt.shifts)


@pytest.mark.parametrize("first_anchor,span", [("prompt_end", 1), ("question", 1), ("question", 3)])
def test_all_vectors_at_once_reproduce_each_chunk_loss(llama, first_anchor, span):
    """Reference §5.9: later vectors cannot change earlier chunks' losses under causal attention, so each chunk's
    reported loss is its loss with every vector applied. A chunk whose vectors are spread over the previous chunk's
    last tokens (anchor_span) is scored on every token they can change (so that it cannot buy its own tokens with
    the previous chunk's): its loss is checked with the vectors up to its own applied."""
    model, tok = llama
    spec = get_spec(model)
    prep = prepare_request(tok, EditRequest("What is the answer?", ANSWER), PromptConfig())
    chunks = make_chunks(prep, ChunkingConfig(window=6, first_anchor=first_anchor, anchor_span=span))
    vt = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2, ValueConfig(max_steps=15, stop_loss=0.0))
    seq = torch.tensor([prep.ids])
    p = prep.prompt_len
    rows = 0
    for k, (c, r) in enumerate(zip(chunks, vt.reports)):
        rows += len(c.anchors)
        upto = rows if span > 1 else len(vt.positions)
        with torch.no_grad(), add_to_output(model.get_submodule(spec.layer_path(2)), [0] * upto,
                                            vt.positions[:upto], vt.shifts[:upto]):
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
        first = max(0, min(c.start, c.anchors[0] + 1 - p))  # the first answer token its vectors can change
        assert (first < c.start) == (span > 1 and k > 0)
        pos = torch.arange(p + first - 1, p + c.end - 1)
        nll = -logp[pos, seq[0, pos + 1]].mean()
        assert float(nll) == pytest.approx(r.nll_after, abs=1e-4)

def test_search_leaves_model_and_flags_untouched(llama):
    model, tok = llama
    spec, prep, chunks = _setup(model, tok)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    search_values(model, spec, prep.ids, prep.prompt_len, chunks[:2], 1, ValueConfig(max_steps=3))
    assert model.training
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}


def test_replayed_layers_put_back_each_layers_own_forward(llama):
    """A layer whose forward is an instance attribute (accelerate's device-moving wrapper on a dispatched
    model) gets that wrapper back; the others get their class forward back."""
    model, _ = llama
    layers = model.model.layers
    calls = []
    inner = layers[1].forward

    def wrapper(*args, **kwargs):  # what accelerate's add_hook_to_module installs
        calls.append(1)
        return inner(*args, **kwargs)

    layers[1].forward = wrapper
    h = torch.zeros(1, 3, 64)
    with replayed_layers(layers, 2, h):
        assert layers[2].forward(torch.ones(1, 3, 64)) is h and "forward" in layers[0].__dict__
    assert layers[1].forward is wrapper and "forward" not in layers[0].__dict__ and "forward" not in layers[2].__dict__
    ids = torch.tensor([[5, 6, 7]])
    model(input_ids=ids)
    assert calls == [1]  # the wrapper still runs in the model's forward


def test_argmax_margin_is_the_labels_lead_over_the_runner_up():
    from anyedit.editing.values import argmax_margin

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    assert argmax_margin(logits, torch.tensor([0, 1])) == pytest.approx(1.5)  # min(2 - 0.5, 3 - 1)
    assert argmax_margin(logits, torch.tensor([1, 1])) == pytest.approx(-1.5)  # 0.5 is not the argmax at row 0


def test_margin_stop_ends_a_chunk_at_the_first_step_that_reaches_the_margin():
    """With ``stop_margin`` the search stops at the first step whose logits put every label first by the margin
    (not before, not after), well before the NLL stop would; without it the NLL stop alone decides."""
    from anyedit.editing.values import _optimise, argmax_margin

    torch.manual_seed(0)
    w = torch.randn(8, 5)
    labels = torch.tensor([3, 3, 3])
    seen: list[float] = []

    def step(delta):  # three positions reading one shifted state through a linear head
        logits = ((torch.ones(8) + delta.sum(0)) @ w).expand(3, 5)
        seen.append(argmax_margin(logits, labels))
        return logits

    h, weights = torch.ones(1, 8), torch.ones(1)
    strict = ValueConfig(lr=0.05, max_steps=300, weight_decay=0.0, stop_loss=1e-3, stop_token_nll=1e-2)
    _, (rep_strict,) = _optimise(step, h, labels, strict, weights)
    seen.clear()
    delta, (rep,) = _optimise(step, h, labels, ValueConfig(**{**strict.to_dict(), "stop_margin": 2.0}), weights)
    assert 0 < rep["steps"] < rep_strict["steps"]
    assert seen[-1] >= 2.0 and all(m < 2.0 for m in seen[:-1])  # stopped at the first step that got there
    assert argmax_margin(step(delta), labels) >= 2.0  # the returned vector is the one that reached it
    with pytest.raises(Exception, match="stop_margin"):
        ValueConfig(stop_margin=-1.0)


@pytest.mark.parametrize("cached", [True, False])
def test_joint_search_reports_each_chunks_loss_with_every_vector_applied(llama, cached):
    """All chunks at once (one pass over the answer per step): each chunk's reported NLL is its NLL with every
    vector in place, the cached and full implementations agree, and every chunk's loss went down."""
    model, tok = llama
    spec, prep, chunks = _setup(model, tok, first_anchor="question")
    cfg = ValueConfig(max_steps=15, lr=0.05, stop_loss=0.0, joint=True, cache_prefix=cached)
    vt = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2, cfg)
    assert vt.positions == [a for c in chunks for a in c.anchors] and len(vt.reports) == len(chunks)
    seq = torch.tensor([prep.ids])
    with torch.no_grad(), add_to_output(model.get_submodule(spec.layer_path(2)), [0] * len(vt.positions),
                                        vt.positions, vt.shifts):
        logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
    for c, r in zip(chunks, vt.reports):
        pos = torch.arange(prep.prompt_len + c.start - 1, prep.prompt_len + c.end - 1)
        assert float(-logp[pos, seq[0, pos + 1]].mean()) == pytest.approx(r.nll_after, abs=1e-4)
        assert r.nll_after < r.nll_before and r.steps == 15
    other = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2,
                          ValueConfig(**{**cfg.to_dict(), "cache_prefix": not cached}))
    torch.testing.assert_close(other.shifts, vt.shifts, rtol=1e-3, atol=1e-4)


def test_joint_optimiser_holds_a_done_chunk_while_the_others_move():
    """Two groups sharing a head: the first is already reproduced by the margin, so its vector stays exactly
    where it is although the second group's loss pulls on it; the search ends when the second gets there."""
    from anyedit.editing.values import _optimise, argmax_margin

    torch.manual_seed(0)
    w = torch.randn(8, 5)
    labels = torch.tensor([0, 3, 3])

    def step(delta):  # row 0 reads delta[0]; rows 1-2 read both vectors
        base = torch.zeros(5)
        base[0] = 10.0
        first = base + delta[0] @ w
        second = (torch.ones(8) + delta[0] + delta[1]) @ w
        return torch.stack([first, second, second])

    h, weights = torch.ones(2, 8), torch.ones(2)
    groups = [(slice(0, 1), slice(0, 1)), (slice(1, 2), slice(1, 3))]
    cfg = ValueConfig(lr=0.05, max_steps=300, weight_decay=0.0, stop_loss=0.0, stop_margin=1.0)
    delta, reps = _optimise(step, h, labels, cfg, weights, groups=groups)
    assert reps[0]["steps"] == 0 and torch.equal(delta[0], torch.zeros(8))
    assert 0 < reps[1]["steps"] < 300 and delta[1].norm() > 0
    logits = step(delta)
    assert argmax_margin(logits[1:], labels[1:]) >= 1.0 and argmax_margin(logits[:1], labels[:1]) >= 1.0
