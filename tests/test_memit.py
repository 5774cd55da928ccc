"""MEMIT backend and the edit lifecycle on tiny llama / qwen2 / gpt2 models."""

from __future__ import annotations

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditRequest
from anyedit.errors import EditApplyError, FingerprintMismatchError
from anyedit.model.arch import get_spec
from anyedit.model.trace import trace
from anyedit.model.weights import Delta
from anyedit.stats.covariance import CovarianceCache

from .tiny import same_weights, tiny_model, weights_of

REQ = EditRequest("What is the answer?", "def add(a, b):\n    return a + b\nThe capital of France is Paris.")


def _config(corpus_file, **over):
    base = {"layers": [1, 2], "chunking.window": 8, "value.max_steps": 20, "value.stop_loss": 0.0,
            "stats.corpus": str(corpus_file), "stats.n_tokens": 2000, "stats.max_len": 32}
    base.update(over)
    return EditConfig().with_overrides(base)



def test_update_matches_the_closed_form(tiny, corpus_file, tmp_path):
    """dW = R^T (lam C + K_p^T K_p + K_s^T K_s)^-1 K_s, transcribed directly, single layer."""
    model, tok = tiny
    cfg = _config(corpus_file, layers=[2], **{"backend.mom2_weight": 7.0})
    cache = CovarianceCache(tmp_path, show_progress=False)
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False)
    spec = get_spec(model)
    (name, delta), = res.deltas.items()
    assert name == spec.mlp_out_weight_name(2)
    # direct transcription
    from anyedit.editing.chunking import make_chunks
    from anyedit.editing.values import search_values
    from anyedit.model.prompts import prepare_request

    prep = prepare_request(tok, REQ, cfg.prompt)
    chunks = make_chunks(prep, cfg.chunking)
    vt = search_values(model, spec, prep.ids, prep.prompt_len, chunks, 2, cfg.value)
    tr = trace(model, spec, [prep.ids], 2, 2)[0]
    pos = [a for c in chunks for a in c.anchors]
    k = tr.keys.double()
    mask = torch.ones(k.shape[0], dtype=torch.bool)
    mask[pos] = False
    ks, kp = k[pos], k[mask]
    c = cache.get(model, tok, spec, [2], cfg.stats)[2].double()
    r = (vt.targets.double() - tr.outputs[pos].double())
    dw = r.T @ ks @ torch.linalg.inv(7.0 * c + kp.T @ kp + ks.T @ ks)  # [hidden, d_ff]
    expected = dw if spec.mlp_out_layout == "out_in" else dw.T
    torch.testing.assert_close(delta.full().double(), expected, rtol=1e-4, atol=1e-6)
    assert delta.rank == len(chunks)


def test_edit_realises_targets_and_revert_is_bitwise(tiny, corpus_file, tmp_path):
    model, tok = tiny
    original = weights_of(model)
    cfg = _config(corpus_file, **{"backend.mom2_weight": 1e-3, "backend.kp_weight": 1.0})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False)
    assert same_weights(model, original), "compute_edits must not change the model"
    assert set(res.deltas) == {get_spec(model).mlp_out_weight_name(i) for i in (1, 2)}
    assert res.diagnostics["realised_fraction"] > 0.95
    spec = get_spec(model)
    from anyedit.model.prompts import prepare_request

    prep = prepare_request(tok, REQ, cfg.prompt)
    before = trace(model, spec, [prep.ids], 2, 2)[0]
    with res.applied(model):
        assert not same_weights(model, original)
        after = trace(model, spec, [prep.ids], 2, 2)[0]
    assert same_weights(model, original)
    # outputs at the non-edited positions of the edit text barely move; edited ones move a lot
    anchors = [a for r in res.reports[0] for a in r["anchors"]]
    mask = torch.ones(len(prep.ids), dtype=torch.bool)
    mask[anchors] = False
    moved_other = (after.outputs[mask] - before.outputs[mask]).norm(dim=1).mean()
    moved_edit = (after.outputs[~mask] - before.outputs[~mask]).norm(dim=1).mean()
    assert moved_edit > 10 * moved_other


def test_weight_edit_reproduces_what_the_vectors_achieved(tiny, corpus_file, tmp_path):
    """Reference §5.9 oracle: after the edit each chunk's teacher-forced NLL is the value search's final NLL."""
    model, tok = tiny
    from anyedit.model.prompts import prepare_request

    cfg = _config(corpus_file, **{"backend.mom2_weight": 1e-3, "value.max_steps": 30})
    prep = prepare_request(tok, REQ, cfg.prompt)
    ids = torch.tensor([prep.ids])
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False)
    with res.applied(model), torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    for r in res.reports[0]:
        pos = torch.arange(prep.prompt_len + r["start"] - 1, prep.prompt_len + r["end"] - 1)
        nll = float(-logp[pos, ids[0, pos + 1]].mean())
        assert nll == pytest.approx(r["nll_after"], abs=0.02)
        assert nll < r["nll_before"] - 0.05


def test_apply_twice_revert_unapplied_and_wrong_model(llama, corpus_file, tmp_path):
    model, tok = llama
    res = anyedit.compute_edits(model, tok, REQ, _config(corpus_file, **{"value.max_steps": 2}),
                                stats_cache=CovarianceCache(tmp_path), show_progress=False)
    res.apply(model)
    with pytest.raises(EditApplyError, match="already applied"):
        res.apply(model)
    res.revert(model)
    with pytest.raises(EditApplyError, match="not applied"):
        res.revert(model)
    other = tiny_model("llama", seed=1)
    state = weights_of(other)
    with pytest.raises(FingerprintMismatchError):
        res.apply(other)
    assert same_weights(other, state)


def test_non_finite_delta_is_refused_before_any_weight_changes(llama, corpus_file, tmp_path):
    model, tok = llama
    res = anyedit.compute_edits(model, tok, REQ, _config(corpus_file, **{"value.max_steps": 2}),
                                stats_cache=CovarianceCache(tmp_path), show_progress=False)
    names = sorted(res.deltas)
    bad = res.deltas[names[-1]]
    a = bad.a.clone()
    a[0, 0] = float("nan")
    res.deltas[names[-1]] = Delta(a=a, b=bad.b)
    state = weights_of(model)
    with pytest.raises(EditApplyError, match="NaN"):
        res.apply(model)
    assert same_weights(model, state)  # the first (finite) delta was not written either


def test_several_requests_in_one_call(llama, corpus_file, tmp_path):
    """Two requests edited together: each gets the chunks of its own answer and the same vectors as when edited
    alone, one update writes them all, and after it each request's chunks are generated as its value search left
    them (teacher-forced NLL of every chunk as at the end of its search)."""
    from anyedit.editing.values import ValueCache
    from anyedit.model.prompts import prepare_request

    model, tok = llama
    reqs = [REQ, EditRequest("Write a poem about rain.", "Rain on the roof, a stitch in time saves nine.")]
    cfg = _config(corpus_file, **{"backend.mom2_weight": 1e-3, "value.max_steps": 30})
    cache, stats = ValueCache(), CovarianceCache(tmp_path)
    res = anyedit.compute_edits(model, tok, reqs, cfg, stats_cache=stats, show_progress=False, value_cache=cache)
    n_chunks = sum(len(r) for r in res.reports)
    assert len(res.reports) == 2 and all(d.rank == n_chunks for d in res.deltas.values())
    preps = [prepare_request(tok, r, cfg.prompt) for r in reqs]
    for prep, reports in zip(preps, res.reports):
        assert reports[0]["start"] == 0 and reports[-1]["end"] == len(prep.target_ids)  # its own answer's chunks
        alone = anyedit.compute_edits(model, tok, prep.request, cfg, stats_cache=stats, show_progress=False,
                                      value_cache=cache)
        assert alone.reports[0] == reports
    assert cache.hits == 2  # each request alone found the batch's own vectors for it
    with res.applied(model), torch.no_grad():
        for prep, reports in zip(preps, res.reports):
            ids = torch.tensor([prep.ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
            for r in reports:
                pos = torch.arange(prep.prompt_len + r["start"] - 1, prep.prompt_len + r["end"] - 1)
                nll = float(-logp[pos, ids[0, pos + 1]].mean())
                assert nll == pytest.approx(r["nll_after"], abs=0.05)
                assert nll < r["nll_before"] - 0.05


def test_key_editability_is_the_mahalanobis_norm_and_snap_moves_the_anchors(tiny, corpus_file, tmp_path):
    from anyedit.editing.keys import key_editability
    from anyedit.model.prompts import prepare_request

    model, tok = tiny
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, show_progress=False)
    cfg = _config(corpus_file, **{"chunking.window": 6, "chunking.snap": 2, "rounds": 1})
    prep = prepare_request(tok, REQ, cfg.prompt)
    c = cache.get(model, tok, spec, [2], cfg.stats)[2].double()
    (scores,) = key_editability(model, spec, [prep.ids], 2, c.float())
    k = trace(model, spec, [prep.ids], 2, 2)[0].keys.double()
    eps = 1e-6 * float(c.diagonal().mean())
    expected = (k * torch.linalg.solve(c + eps * torch.eye(c.shape[0], dtype=c.dtype), k.T).T).sum(1)
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), expected, rtol=1e-6, atol=1e-9)
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False)
    anchors = [r["anchors"][0] for r in res.reports[0][1:]]
    p, n = prep.prompt_len, len(prep.target_ids)
    starts = list(range(6, n, 6))
    assert len(anchors) == len(starts)
    for a, s in zip(anchors, starts):  # each anchor is the best-scored one within reach of its window's
        reach = [p + i - 1 for i in range(s - 2, min(s + 2, n - 1) + 1)]
        assert a in reach and scores[a] == max(scores[i] for i in reach)
