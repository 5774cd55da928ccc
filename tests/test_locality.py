from __future__ import annotations

import torch

from anyedit.locality import LocalityProbe
from anyedit.preserve import builtin_prompts


def test_probe_sets_are_disjoint_and_unedited_model_agrees_with_itself(llama):
    model, tok = llama
    assert not set(builtin_prompts("probe")) & set(builtin_prompts("preserve"))
    probe = LocalityProbe(model, tok, prompts=["What is the answer?", "Write a poem about rain."], max_new_tokens=8)
    rep = probe.compare(model)
    assert rep.token_agreement == 1.0 and rep.exact == 1.0 and abs(rep.nll_change) < 1e-5 and not rep.changed


def test_a_damaged_model_is_reported(llama):
    model, tok = llama
    probe = LocalityProbe(model, tok, prompts=["What is the answer?", "Write a poem about rain."], max_new_tokens=8)
    with torch.no_grad():
        w = model.model.layers[1].mlp.down_proj.weight
        saved = w.clone()
        w.add_(torch.randn_like(w) * 5)
    try:
        rep = probe.compare(model)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert rep.token_agreement < 1.0 and rep.nll_change > 0 and rep.changed
