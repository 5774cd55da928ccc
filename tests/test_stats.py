from __future__ import annotations

import pytest
import torch

from anyedit.config import StatsConfig
from anyedit.errors import CorpusError
from anyedit.model.arch import get_spec
from anyedit.stats import covariance as stats_mod
from anyedit.stats.covariance import CovarianceCache, compute_second_moments, corpus_source


def test_one_pass_equals_direct_computation(llama, corpus_file):
    model, tok = llama
    spec = get_spec(model)
    cfg = StatsConfig(corpus=str(corpus_file), n_tokens=300, max_len=32, batch_size=3)
    got = compute_second_moments(model, spec, [1, 3], corpus_source(model, tok, cfg), show_progress=False)
    # direct: the same rows, one at a time, every layer separately
    rows = list(stats_mod._token_rows(tok, stats_mod.iter_texts(str(corpus_file)), 32, 300))
    assert sum(len(r) for r in rows) == 300
    for layer in (1, 3):
        acc, n = torch.zeros(128, 128, dtype=torch.float64), 0
        for r in rows:
            keys = []
            h = model.get_submodule(spec.mlp_out_path(layer)).register_forward_pre_hook(
                lambda m, a: keys.append(a[0][0]))
            with torch.no_grad():
                model(input_ids=torch.tensor([r]))
            h.remove()
            acc += keys[0].double().T @ keys[0].double()
            n += len(r)
        torch.testing.assert_close(got[layer].double(), acc / n, rtol=1e-4, atol=1e-7)


def test_half_precision_keys_are_summed_without_overflow(llama, corpus_file):
    """``stats.dtype="float16"`` rounds the keys to float16 but sums their products at float32: large keys
    (a norm weight scaled up) give finite statistics close to the float32 ones, where a float16 product
    overflows (the largest float16 is 65504)."""
    model, tok = llama
    spec = get_spec(model)
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight.mul_(300.0)
    src = {d: corpus_source(model, tok, StatsConfig(corpus=str(corpus_file), n_tokens=200, max_len=32, dtype=d))
           for d in ("float32", "float16")}
    full = compute_second_moments(model, spec, [1], src["float32"], show_progress=False)[1]
    assert full.max() > 65504  # a float16 matmul would give inf
    half = compute_second_moments(model, spec, [1], src["float16"], show_progress=False)[1]
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, full, rtol=2e-2, atol=1e-3 * float(full.abs().max()))


def test_cache_is_used_and_keyed(llama, corpus_file, tmp_path, monkeypatch):
    model, tok = llama
    spec = get_spec(model)
    cfg = StatsConfig(corpus=str(corpus_file), n_tokens=200, max_len=32)
    first = CovarianceCache(tmp_path, show_progress=False).get(model, tok, spec, [1, 2], cfg)
    files = sorted((tmp_path / "stats").rglob("*.safetensors"))
    assert len(files) == 2

    def boom(*a, **k):
        raise AssertionError("statistics recomputed although a valid cache exists")

    monkeypatch.setattr(stats_mod, "compute_second_moments", boom)
    again = CovarianceCache(tmp_path).get(model, tok, spec, [2, 1], cfg)  # a new object: from disk
    assert all(torch.equal(first[i], again[i]) for i in (1, 2))
    # a different sample count is a different key
    with pytest.raises(AssertionError, match="recomputed"):
        CovarianceCache(tmp_path).get(model, tok, spec, [1], StatsConfig(corpus=str(corpus_file), n_tokens=100,
                                                                          max_len=32))
    # a changed corpus file is a different key too
    corpus_file.write_text(corpus_file.read_text() + "\n\nMore text here for a new hash.")
    with pytest.raises(AssertionError, match="recomputed"):
        CovarianceCache(tmp_path).get(model, tok, spec, [1], cfg)


def test_missing_corpus_is_a_clear_error(llama, tmp_path):
    model, tok = llama
    with pytest.raises(CorpusError, match="not found"):
        CovarianceCache(tmp_path).get(model, tok, get_spec(model), [1], StatsConfig(corpus=str(tmp_path / "no.txt")))


def test_short_sources_warn_only_where_tokens_were_requested(llama, caplog):
    """Fewer tokens than requested (a short text corpus) is worth a warning; fewer than a bound is not
    (conversations whose answers end before ``answer_tokens``: the count is only the progress bar's total)."""
    from anyedit.config import PreserveConfig, PromptConfig
    from anyedit.stats.covariance import RowSource
    from anyedit.stats.preserve import chat_source

    model, tok = llama
    spec = get_spec(model)
    chat = chat_source(model, tok, PreserveConfig(n_prompts=3, answer_tokens=20), PromptConfig(), None)
    assert chat.n_tokens_is_bound and sum(len(r) for r in chat.rows()) <= chat.n_tokens
    rows = [[5, 6, 7, 8]] * 3
    with caplog.at_level("WARNING", logger="anyedit.stats.covariance"):
        compute_second_moments(model, spec, [1], RowSource({"a": 1}, lambda: rows, 100, n_tokens_is_bound=True),
                               show_progress=False)
        assert "requested tokens" not in caplog.text
        compute_second_moments(model, spec, [1], RowSource({"a": 2}, lambda: rows, 100), show_progress=False)
    assert "got only 12 of the 100 requested tokens" in caplog.text

def test_model_samples_are_reproducible_and_leave_the_global_rng_alone(llama):
    import copy

    from anyedit.stats.corpus import iter_texts

    model, tok = llama
    state = torch.get_rng_state()
    first = [t for t, _ in zip(iter_texts("model-samples", model, tok, 8), range(3))]
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(123)  # whatever the caller's random state, the corpus is the same
    assert [t for t, _ in zip(iter_texts("model-samples", model, tok, 8), range(3))] == first
    saved = copy.deepcopy(model.generation_config)
    try:  # nor do a checkpoint's generation defaults change it
        used = sorted({i for t in first for i in tok(t, add_special_tokens=False)["input_ids"]})
        model.generation_config.update(suppress_tokens=used, repetition_penalty=5.0)  # would forbid those texts
        assert [t for t, _ in zip(iter_texts("model-samples", model, tok, 8), range(3))] == first
    finally:
        model.generation_config = saved


@pytest.mark.parametrize("field", ["stats.corpus", "preserve.prompts"])
def test_a_missing_corpus_or_prompts_file_fails_before_the_value_search(llama, tmp_path, monkeypatch, field):
    import anyedit
    import anyedit.editing.compute as editing
    from anyedit import EditConfig, EditRequest

    def no_search(*a, **k):
        raise AssertionError("the value search ran before the missing file was noticed")

    monkeypatch.setattr(editing, "search_values", no_search)
    model, tok = llama
    cfg = EditConfig().with_overrides({"layers": [1, 2], field: str(tmp_path / "missing.txt")})
    with pytest.raises(CorpusError, match="not found"):
        anyedit.compute_edits(model, tok, EditRequest("Q?", "An answer."), cfg,
                              stats_cache=CovarianceCache(tmp_path, False), show_progress=False)
