"""UnKE backend on tiny models: trains one whole layer through the model's own forward."""

from __future__ import annotations

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditRequest
from anyedit.errors import ConfigError
from anyedit.model.arch import get_spec
from anyedit.model.prompts import prepare_request
from anyedit.model.trace import trace
from anyedit.stats.covariance import CovarianceCache

REQ = EditRequest("What is the answer?", "def add(a, b):\n    return a + b\nThe capital of France is Paris.")


def _cfg(tmp_path, **over):
    base = {"method": "unke", "layers": [2], "chunking.window": 8, "value.max_steps": 20, "value.stop_loss": 0.0,
            "backend.steps": 60, "backend.lr": 0.01, "preserve.n_prompts": 6, "preserve.answer_tokens": 8}
    base.update(over)
    return EditConfig().with_overrides(base)


def test_unke_moves_anchor_outputs_to_targets_and_keeps_the_rest(tiny, tmp_path):
    model, tok = tiny
    spec = get_spec(model)
    state = {n: p.clone() for n, p in model.state_dict().items()}
    res = anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path), stats_cache=CovarianceCache(tmp_path, False),
                                show_progress=False)
    assert all(torch.equal(p, state[n]) for n, p in model.state_dict().items())
    prefix = spec.layer_path(2) + "."
    assert res.deltas and all(n.startswith(prefix) for n in res.deltas)
    assert all(d.dense is not None for d in res.deltas.values())
    hist = res.diagnostics["anchor_mse"]
    assert res.diagnostics["anchor_mse_final"] < 0.2 * hist[0]
    prep = prepare_request(tok, REQ, res.config.prompt)
    anchors = [a for r in res.reports[0] for a in r["anchors"]]
    before = trace(model, spec, [prep.ids], 2, 2)[0].outputs
    with res.applied(model):
        after = trace(model, spec, [prep.ids], 2, 2)[0].outputs
    other = torch.ones(len(prep.ids), dtype=torch.bool)
    other[anchors] = False
    moved_edit = (after[~other] - before[~other]).norm(dim=1).mean()
    moved_other = (after[other] - before[other]).norm(dim=1).mean()
    assert moved_edit > 5 * moved_other
    assert all(torch.equal(p, state[n]) for n, p in model.state_dict().items())


def test_unke_refuses_several_layers_or_another_value_layer(llama, tmp_path):
    model, tok = llama
    with pytest.raises(ConfigError, match="exactly one layer"):
        anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, layers=[1, 2]), stats_cache=CovarianceCache(tmp_path),
                              show_progress=False)
    with pytest.raises(ConfigError, match="value.layer"):
        anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{"value.layer": 1}),
                              stats_cache=CovarianceCache(tmp_path), show_progress=False)
