from __future__ import annotations

import pytest
import torch

from anyedit import stats as stats_mod
from anyedit.arch import get_spec
from anyedit.config import StatsConfig
from anyedit.errors import CorpusError
from anyedit.stats import CovarianceCache, compute_second_moments, corpus_source


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
