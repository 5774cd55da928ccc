"""AlphaEdit, ROME and FT-L backends (and the shared lifecycle of every backend) on tiny models."""

from __future__ import annotations

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditHistory, EditRequest
from anyedit.errors import ConfigError, EditApplyError
from anyedit.model.arch import get_spec
from anyedit.model.prompts import prepare_request
from anyedit.model.trace import trace
from anyedit.model.weights import Delta
from anyedit.stats import covariance as stats_mod
from anyedit.stats import preserve as preserve_mod
from anyedit.stats.covariance import CovarianceCache

from .tiny import same_weights, weights_of

REQ = EditRequest("What is the answer?", "def add(a, b):\n    return a + b\nThe capital of France is Paris.")
OTHER = EditRequest("Write a poem about rain.", "Rain on the roof, a stitch in time saves nine, and the dog sleeps.")


def _config(method, corpus_file, **over):
    base = {"method": method, "layers": [1, 2], "chunking.window": 8, "value.max_steps": 20,
            "value.stop_loss": 0.0, "stats.corpus": str(corpus_file), "stats.n_tokens": 2000, "stats.max_len": 32}
    if method in ("rome", "ft", "unke"):
        base["layers"] = [2]
    if method == "ft":
        base.pop("chunking.window")
    if method == "unke":
        base["backend.steps"] = 5
    base.update(over)
    return EditConfig().with_overrides(base)



def _threshold(model, tok, cfg, cache, layer):
    """A threshold that leaves half of the key space as 'null space' on the tiny model."""
    c = cache.get(model, tok, get_spec(model), [layer], cfg.stats)[layer].double()
    return float(torch.linalg.eigvalsh(c).median())


@pytest.mark.parametrize("method", ["memit", "alphaedit", "unke"])
def test_prepare_statistics_caches_everything_the_edit_loads(method, tiny, corpus_file, tmp_path, monkeypatch):
    """``prepare_statistics`` (``anyedit stats``) computes on the unedited model every statistic the method's
    update loads, the chat-preservation ones included: a later edit through a new cache object over the same
    directory (as in a new process) computes no statistics and generates no preservation answers."""
    model, tok = tiny
    cfg = _config(method, corpus_file, **{"value.max_steps": 3, "backend.preserve_weight": 1.0,
                                          "preserve.n_prompts": 4, "preserve.answer_tokens": 6})
    if method == "alphaedit":
        thr = _threshold(model, tok, cfg, CovarianceCache(tmp_path / "probe", show_progress=False), 2)
        cfg = cfg.with_overrides({"backend.nullspace_threshold": thr})
    loaded = anyedit.prepare_statistics(model, tok, cfg, cache_dir=tmp_path, show_progress=False)
    assert len(list((tmp_path / "preserve").glob("answers-*.json"))) == 1
    assert any("chat-preservation" in what for what in loaded), loaded

    def boom(*a, **k):
        raise AssertionError("computed at edit time although prepare_statistics ran")

    monkeypatch.setattr(stats_mod, "compute_second_moments", boom)
    monkeypatch.setattr(preserve_mod, "generate_ids", boom)
    res = anyedit.compute_edits(model, tok, REQ, cfg, cache_dir=tmp_path, show_progress=False)
    assert res.deltas
    assert anyedit.prepare_statistics(model, tok, cfg, cache_dir=tmp_path, show_progress=False) == loaded  # cached
    assert anyedit.prepare_statistics(model, tok, cfg.with_overrides({"method": "ft", "layers": [2]}),
                                      cache_dir=tmp_path, show_progress=False) == []


@pytest.mark.parametrize("method", ["memit", "alphaedit", "rome", "ft", "unke"])
def test_every_backend_applies_reverts_bitwise_and_refuses_non_finite(method, tiny, corpus_file, tmp_path):
    model, tok = tiny
    cache = CovarianceCache(tmp_path, show_progress=False)
    cfg = _config(method, corpus_file, **{"value.max_steps": 3})
    if method == "alphaedit":
        cfg = cfg.with_overrides({"backend.nullspace_threshold": _threshold(model, tok, cfg, cache, 2)})
    original = weights_of(model)
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False)
    assert same_weights(model, original), "compute_edits must not change the model"
    assert res.deltas and all(d.is_finite() and d.full().abs().sum() > 0 for d in res.deltas.values())
    res.apply(model)
    assert not same_weights(model, original)
    res.revert(model)
    assert same_weights(model, original)
    name = sorted(res.deltas)[-1]
    full = res.deltas[name].full().clone()
    full[0, 0] = float("inf")
    res.deltas[name] = Delta(dense=full)
    with pytest.raises(EditApplyError, match="NaN|inf|finite"):
        res.apply(model)
    assert same_weights(model, original)


def test_alphaedit_matches_its_closed_form_and_stays_in_the_null_space(tiny, corpus_file, tmp_path):
    model, tok = tiny
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, show_progress=False)
    cfg = _config("alphaedit", corpus_file, layers=[2], **{"backend.l2": 0.5})
    thr = _threshold(model, tok, cfg, cache, 2)
    cfg = cfg.with_overrides({"backend.nullspace_threshold": thr})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False)
    (name, delta), = res.deltas.items()
    dw = delta.full().double()
    dw = dw if spec.mlp_out_layout == "out_in" else dw.T  # [hidden, d_ff]
    # direct transcription with a dense projector
    c = cache.get(model, tok, spec, [2], cfg.stats)[2].double()
    evals, evecs = torch.linalg.eigh(c)
    u0, u_kept = evecs[:, evals < thr], evecs[:, evals >= thr]
    p = u0 @ u0.T
    prep = prepare_request(tok, REQ, cfg.prompt)
    tr = trace(model, spec, [prep.ids], 2, 2)[0]
    pos = [a for r in res.reports[0] for a in r["anchors"]]
    k = tr.keys.double()
    mask = torch.ones(k.shape[0], dtype=torch.bool)
    mask[pos] = False
    ks, kp = k[pos], k[mask]
    from anyedit.editing.chunking import make_chunks
    from anyedit.editing.values import search_values

    vt = search_values(model, spec, prep.ids, prep.prompt_len, make_chunks(prep, cfg.chunking), 2, cfg.value)
    r = vt.targets.double() - tr.outputs[pos].double()
    x = torch.linalg.solve(p @ (ks.T @ ks + kp.T @ kp) + 0.5 * torch.eye(k.shape[1], dtype=torch.float64), p @ ks.T)
    torch.testing.assert_close(dw, r.T @ x.T, rtol=1e-4, atol=1e-6)
    # the defining property: the update does not act on the preserved key directions
    assert (dw @ u_kept).norm() < 1e-6 * max(1.0, dw.norm())
    assert (dw @ u0).norm() > 1e-3


def test_alphaedit_history_protects_earlier_edits(llama, corpus_file, tmp_path):
    model, tok = llama
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, show_progress=False)
    cfg = _config("alphaedit", corpus_file, layers=[2], **{"backend.l2": 1e-4})
    cfg = cfg.with_overrides({"backend.nullspace_threshold": _threshold(model, tok, cfg, cache, 2)})
    history = EditHistory()
    first = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False, history=history)
    assert history.n_edits == 1 and history.get(2) is not None
    with first.applied(model):
        k1 = trace(model, spec, [prepare_request(tok, REQ, cfg.prompt).ids], 2, 2)[0].keys.double()
        protected = anyedit.compute_edits(model, tok, OTHER, cfg, stats_cache=cache, show_progress=False,
                                          history=history)
        plain = anyedit.compute_edits(model, tok, OTHER, cfg, stats_cache=cache, show_progress=False)
    name = spec.mlp_out_weight_name(2)
    anchors = [a for r in first.reports[0] for a in r["anchors"]]
    hit = {}
    for label, res in (("protected", protected), ("plain", plain)):
        dw = res.deltas[name].full().double()
        dw = dw if spec.mlp_out_layout == "out_in" else dw.T
        hit[label] = (dw @ k1[anchors].T).norm() / dw.norm()
    assert hit["protected"] < 0.5 * hit["plain"], hit
    path = history.save(tmp_path / "history.safetensors")
    again = EditHistory.load(path)
    assert again.n_edits == 2 and torch.equal(again.get(2), history.get(2))


def test_rome_writes_every_key_exactly(tiny, corpus_file, tmp_path):
    """With the edit applied, the edited layer's output at every anchor is the searched target (W k = v at each
    key), checked on the model itself, not through the backend's own diagnostics."""
    from anyedit.editing.values import ValueCache

    model, tok = tiny
    cfg = _config("rome", corpus_file)
    cache = ValueCache()
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False,
                                value_cache=cache)
    (values,) = cache._store.values()  # the vectors the update wrote
    (delta,) = res.deltas.values()
    assert delta.rank == len(res.reports[0]) == len(values.positions)
    prep = prepare_request(tok, REQ, cfg.prompt)
    spec = get_spec(model)
    before = trace(model, spec, [prep.ids], 2, 2)[0].outputs[values.positions]
    with res.applied(model):
        after = trace(model, spec, [prep.ids], 2, 2)[0].outputs[values.positions]
    assert (values.targets - before).norm(dim=1).min() > 0.1  # the targets are away from where the model was
    torch.testing.assert_close(after, values.targets, rtol=1e-3, atol=1e-3)


def test_rome_at_the_subjects_last_token_as_in_the_original_rome(llama, corpus_file, tmp_path):
    model, tok = llama
    req = EditRequest("Where was the quick brown fox born?", "The lazy dog was born in Paris.",
                      subject="quick brown fox")
    cfg = _config("rome", corpus_file, **{"chunking.mode": "none", "chunking.first_anchor": "subject_last"})
    res = anyedit.compute_edits(model, tok, req, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False)
    (chunk,) = res.reports[0]
    assert chunk["anchors"] == [prepare_request(tok, req, cfg.prompt).subject_end]
    assert res.diagnostics["realised_fraction"] > 0.99
    original = weights_of(model)
    with pytest.raises(ConfigError, match="needs a subject"):
        anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False)
    assert same_weights(model, original)


def test_ft_lowers_the_answer_nll_within_its_norm_bound(llama, corpus_file, tmp_path):
    model, tok = llama
    cfg = _config("ft", corpus_file, **{"backend.lr": 1e-2, "backend.steps": 10, "backend.norm_constraint": 0.05})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path), show_progress=False)
    nll = res.diagnostics["nll"]
    assert nll[-1] < nll[0] - 0.1
    (delta,) = res.deltas.values()
    assert float(delta.full().abs().max()) <= 0.05 + 1e-6
    assert res.reports == []  # no value search


def test_tuned_ft_keeps_the_preservation_answers_and_stops_at_its_margin(llama, corpus_file, tmp_path):
    """FT with preserve_weight also trains on the model's own answers to the preservation prompts: they stay far
    more likely than without it; with stop_margin it stops as soon as the answer is the argmax by that margin."""
    from anyedit.stats.preserve import chat_source, preserve_prompt_ids

    model, tok = llama
    prompts = tmp_path / "keep.txt"
    prompts.write_text("How do I boil an egg?\nWrite a poem.\nWhat is rain?\nWho are you?\n")
    over = {"backend.lr": 1e-2, "backend.steps": 10, "backend.norm_constraint": 0.0,
            "preserve.prompts": str(prompts), "preserve.answer_tokens": 6}
    cfg = _config("ft", corpus_file, **over)
    rows = list(chat_source(model, tok, cfg.preserve, cfg.prompt, tmp_path).rows())
    starts = [len(q) for q in preserve_prompt_ids(tok, cfg.preserve, cfg.prompt)]

    def preserved_nll() -> float:
        with torch.no_grad():
            total = 0.0
            for row, s in zip(rows, starts):
                logp = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0].float(), -1)
                total -= logp[torch.arange(s - 1, len(row) - 1), torch.tensor(row[s:])].mean().item()
        return total / len(rows)

    base = preserved_nll()
    rise = {}
    for w in (0.0, 3.0):
        res = anyedit.compute_edits(model, tok, REQ, cfg.with_overrides({"backend.preserve_weight": w}),
                                    cache_dir=tmp_path, show_progress=False)
        with res.applied(model):
            rise[w] = preserved_nll() - base
    assert rise[0.0] > 0.2 and rise[3.0] < 0.5 * rise[0.0], rise
    res = anyedit.compute_edits(model, tok, REQ, cfg.with_overrides({"backend.stop_margin": 0.0,
                                                                     "backend.steps": 60}),
                                cache_dir=tmp_path, show_progress=False)
    d = res.diagnostics
    assert d["reproduced"] is True and d["answer_margin"] >= 0.0 and 0 < d["update_steps"] < 60


def test_methods_refuse_what_they_do_not_support():
    with pytest.raises(ConfigError, match="does not use chunking"):
        EditConfig.from_dict({"method": "ft", "chunking": {"mode": "window", "window": 20}})
    with pytest.raises(ConfigError, match="exactly one layer"):
        EditConfig.from_dict({"method": "rome", "layers": [1, 2]})
    # switching to ft turns chunking off
    assert EditConfig().with_overrides({"method": "ft", "layers": [2]}).chunking.mode == "none"


def test_value_cache_shares_vectors_between_backends_on_the_same_model_state(llama, corpus_file, tmp_path):
    from anyedit.editing.values import ValueCache

    model, tok = llama
    cache, vc = CovarianceCache(tmp_path, show_progress=False), ValueCache()
    memit = anyedit.compute_edits(model, tok, REQ, _config("memit", corpus_file), stats_cache=cache,
                                  show_progress=False, value_cache=vc)
    fp = vc.fingerprint(model)
    rome = anyedit.compute_edits(model, tok, REQ, _config("rome", corpus_file, layers=[2]), stats_cache=cache,
                                 show_progress=False, value_cache=vc)
    assert vc.hits == 1 and rome.reports == memit.reports
    with memit.applied(model):  # another model state: searched again
        assert vc.fingerprint(model) != fp
        anyedit.compute_edits(model, tok, REQ, _config("rome", corpus_file, layers=[2]), stats_cache=cache,
                              show_progress=False, value_cache=vc)
    assert vc.hits == 1 and vc.fingerprint(model) == fp


def test_value_cache_key_holds_where_the_answer_starts():
    """The same token ids split differently into prompt and answer have other targets: other vectors."""
    from anyedit.config import ValueConfig
    from anyedit.editing.values import ValueCache
    from anyedit.types import Chunk

    chunks = [Chunk(start=0, end=2, anchors=(3,))]
    key = ValueCache().key
    assert key("fp", [5, 6, 7, 8, 9], 3, chunks, 1, ValueConfig()) != key("fp", [5, 6, 7, 8, 9], 4, chunks, 1,
                                                                         ValueConfig())


def test_trace_runs_without_dropout_and_keeps_the_models_mode(llama):
    from anyedit.model.arch import get_spec
    from anyedit.model.trace import trace

    model, _ = llama
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    model.train()
    seqs = [[5, 6, 7, 8, 9, 10]]
    a, b = (trace(model, get_spec(model), seqs, 1, 2)[0] for _ in range(2))
    assert model.training
    assert torch.equal(a.keys, b.keys) and torch.equal(a.outputs, b.outputs)
    model.eval()
