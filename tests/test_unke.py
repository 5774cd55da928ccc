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


def _own_margin(model, tok, res) -> float:
    """The smallest argmax margin of REQ's answer tokens in the model with ``res`` applied (teacher-forced)."""
    from anyedit.model.logits import answer_margins

    prep = prepare_request(tok, REQ, res.config.prompt)
    with res.applied(model):
        return answer_margins(model, [prep.ids], [prep.prompt_len])[0]


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


def test_unke_margin_stop_checks_the_edited_models_own_answer_margin(llama, tmp_path, monkeypatch):
    model, tok = llama
    cache = CovarianceCache(tmp_path, False)
    # a margin it never reaches: every step runs, and the margin it reports is the edited model's own
    res = anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{"backend.stop_margin": 1e6, "rounds": 1,
                                                                   "backend.steps": 12, "backend.check_every": 5}),
                                stats_cache=cache, show_progress=False)
    d = res.diagnostics
    assert d["update_steps"] == 12 and d["reproduced"] is False
    assert d["answer_margin"] == pytest.approx(_own_margin(model, tok, res), abs=1e-4)
    # once the check passes, the update stops there and no further round runs (the tiny random model never gets
    # its answer reproduced, so the check is made to pass at the 10th step)
    from anyedit.backends import unke

    seen = []

    def passes_at_ten(self, out, rows=None):
        seen.append(1)
        return [5.0 if len(seen) == 3 else -1.0]

    monkeypatch.setattr(unke._LayerIO, "answer_margins", passes_at_ten)
    res = anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{"backend.stop_margin": 0.5, "rounds": 3,
                                                                   "backend.check_every": 5}),
                                stats_cache=cache, show_progress=False)
    assert res.diagnostics["update_steps"] == 10 and res.diagnostics["reproduced"] is True
    assert len(res.diagnostics["rounds"]) == 1 and len(seen) == 3  # checked at steps 0, 5 and 10
    with pytest.raises(ConfigError, match="stop_margin"):
        _cfg(tmp_path, **{"backend.stop_margin": -1.0})


def test_unke_mlp_mode_trains_only_the_mlp_and_its_layer_output_is_the_models_own(tiny, tmp_path):
    """train='mlp' replays the MLP alone over recorded inputs; the margin it checks must be the edited model's."""
    model, tok = tiny
    spec = get_spec(model)
    state = {n: p.clone() for n, p in model.state_dict().items()}
    cfg = _cfg(tmp_path, **{"backend.train": "mlp", "backend.stop_margin": 1e6, "backend.steps": 12, "rounds": 1,
                            "backend.preserve_tokens": 5})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path, False),
                                show_progress=False)
    assert all(torch.equal(p, state[n]) for n, p in model.state_dict().items())
    mlp = spec.mlp_out_path(2).rsplit(".", 1)[0] + "."
    assert res.deltas and all(n.startswith(mlp) for n in res.deltas)
    assert spec.mlp_out_weight_name(2) in res.deltas
    d = res.diagnostics
    assert d["update_steps"] == 12 and d["anchor_mse_final"] < d["anchor_mse"][0]
    assert d["answer_margin"] == pytest.approx(_own_margin(model, tok, res), abs=1e-4)


def test_unke_mlp_mode_refuses_a_norm_after_the_mlp_before_any_work(tmp_path):
    from anyedit.errors import UnsupportedArchitectureError

    from .tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("gemma2"), tiny_tokenizer()
    state = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(UnsupportedArchitectureError, match="norm after the MLP"):
        anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{"backend.train": "mlp"}),
                              stats_cache=CovarianceCache(tmp_path, False), show_progress=False)
    assert all(torch.equal(p, state[n]) for n, p in model.state_dict().items())
    with pytest.raises(ConfigError, match="train"):
        _cfg(tmp_path, **{"backend.train": "attention"})


def test_unke_keeps_training_until_the_earlier_answers_keep_their_margin(llama, tmp_path, monkeypatch):
    """In sequential editing the update stops only when the new answer passes and no earlier answer (the history's
    texts) has lost margin below its floor, min(history_margin or else stop_margin, its margin when the update
    began); the margins are
    stubbed (a tiny random model reproduces nothing)."""
    from anyedit import EditHistory
    from anyedit.backends import unke

    model, tok = llama
    cache = CovarianceCache(tmp_path, False)
    over = {"backend.stop_margin": 0.5, "rounds": 1, "backend.steps": 20, "backend.check_every": 5}
    history = EditHistory()
    anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **over), stats_cache=cache, show_progress=False,
                          history=history)
    assert len(history.rows) == 1 and history.starts[0] == prepare_request(tok, REQ, EditConfig().prompt).prompt_len
    first = EditHistory()
    first.add({}, history.rows, history.starts)
    spans = [(history.starts[0], len(history.rows[0]))]
    other = EditRequest("Who wrote it?", "It was written by a fox.")

    def run(history_margins, rounds=1, extra=None):
        seen = {"edit": 0, "history": 0}

        def stub(self, out, rows=None):
            kind = "history" if self.spans == spans else "edit"
            seen[kind] += 1
            if kind == "edit":
                return [-1.0 if seen["edit"] == 1 else 5.0]  # the new answer passes from the second check on
            return [history_margins[min(seen["history"], len(history_margins)) - 1]]

        monkeypatch.setattr(unke._LayerIO, "answer_margins", stub)
        h = EditHistory()
        h.merge(first)
        return anyedit.compute_edits(model, tok, other, _cfg(tmp_path, **{**over, "rounds": rounds, **(extra or {})}),
                                     stats_cache=cache, show_progress=False, history=h).diagnostics

    # found at 1.0 (floor 0.5), then lost: never stops early, and the second round keeps the first round's floor
    # (not the margin the first round's update left)
    d = run([1.0, -1.0], rounds=2)
    assert d["update_steps"] == 20 and d["reproduced"] is False
    assert d["history_texts"] == 1 and d["history_margin_vs_floor"] == pytest.approx(-1.5)
    assert len(d["rounds"]) == 2 and [r["reproduced"] for r in d["rounds"]] == [False, False]
    # found at 0.2 (its floor: 0.2), below it at the check of step 5, back above at step 10: stops there
    d = run([0.2, 0.1, 0.6])
    assert d["update_steps"] == 10 and d["reproduced"] is True
    assert d["history_margin_vs_floor"] == pytest.approx(0.4)
    # found at 1.0, at 0.3 when the new answer passes (step 5): below the floor min(stop_margin 0.5, 1.0), so the
    # update goes on; with history_margin 0.1 the floor is 0.1 and it stops there
    d = run([1.0, 0.3, 0.3, 0.3, 0.3])
    assert d["update_steps"] == 20 and d["history_margin_vs_floor"] == pytest.approx(-0.2)
    d = run([1.0, 0.3], extra={"backend.history_margin": 0.1})
    assert d["update_steps"] == 5 and d["reproduced"] is True
    assert d["history_margin_vs_floor"] == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="history_margin"):
        _cfg(tmp_path, **{"backend.history_margin": -1.0})


def test_unke_replays_the_earlier_edits_targets_at_their_anchors(llama, tmp_path):
    """A later update trains the layer towards the targets the earlier edit's own value search found (kept in the
    history with their anchor positions); with replay_weight 0 those anchors are only kept where they are. The
    earlier edit is not applied here, so its anchors start away from their targets and only replay moves them."""
    from anyedit import EditHistory

    model, tok = llama
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, False)
    history = EditHistory()
    first = anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path), stats_cache=cache, show_progress=False,
                                  history=history)
    layer, positions, vectors = history.targets[0]
    assert layer == 2 and positions == [a for r in first.reports[0] for a in r["anchors"]]
    assert vectors.shape == (len(positions), model.config.hidden_size)
    ids = history.rows[0]
    before = trace(model, spec, [ids], 2, 2)[0].outputs[positions]
    other = EditRequest("Who wrote it?", "It was written by a fox.")
    gap = {}
    for w in (0.0, 1.0):
        h = EditHistory()
        h.merge(history)
        h.applied = {}  # the first edit is not applied here
        res = anyedit.compute_edits(model, tok, other, _cfg(tmp_path, **{"backend.replay_weight": w}),
                                    stats_cache=cache, show_progress=False, history=h)
        with res.applied(model):
            after = trace(model, spec, [ids], 2, 2)[0].outputs[positions]
        gap[w] = ((after - vectors).norm(dim=1) / (before - vectors).norm(dim=1)).mean().item()
    assert gap[1.0] < 0.5 and gap[0.0] > 0.8, gap


def test_history_adapt_raises_the_weight_of_an_earlier_answer_below_its_floor(llama, tmp_path, monkeypatch):
    """With history_adapt, an earlier answer found below its floor at a check has its weight multiplied by
    1 + history_adapt (capped at 64, carried into the next round), and the raised weight pulls its anchors closer
    to their own targets than the fixed weight does; with 0 the weights are not even reported. The margins are
    stubbed: the earlier answer is always below its floor, the new one never passes."""
    from anyedit import EditHistory
    from anyedit.backends import unke

    model, tok = llama
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, False)
    history = EditHistory()
    anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path), stats_cache=cache, show_progress=False, history=history)
    layer, positions, vectors = history.targets[0]
    ids = history.rows[0]
    before = trace(model, spec, [ids], 2, 2)[0].outputs[positions]
    spans = [(history.starts[0], len(ids))]
    calls = {"history": 0}

    def stub(self, out, rows=None):
        if self.spans == spans:
            calls["history"] += 1
            return [1.0 if calls["history"] == 1 else -1.0]  # floor min(0.5, 1.0); below it at every check
        return [-1.0]

    monkeypatch.setattr(unke._LayerIO, "answer_margins", stub)
    other = EditRequest("Who wrote it?", "It was written by a fox.")
    over = {"backend.stop_margin": 0.5, "backend.steps": 40, "backend.check_every": 10, "rounds": 2,
            "backend.history_weight": 0.1, "backend.replay_weight": 0.1}
    gap, diags = {}, {}
    for adapt in (0.0, 1.0):
        h = EditHistory()
        h.merge(history)
        h.applied = {}  # the first edit is not applied: its anchors start away from their targets
        calls["history"] = 0
        res = anyedit.compute_edits(model, tok, other, _cfg(tmp_path, **over, **{"backend.history_adapt": adapt}),
                                    stats_cache=cache, show_progress=False, history=h)
        diags[adapt] = res.diagnostics["rounds"]
        with res.applied(model):
            after = trace(model, spec, [ids], 2, 2)[0].outputs[positions]
        gap[adapt] = ((after - vectors).norm(dim=1) / (before - vectors).norm(dim=1)).mean().item()
    assert all("history_weights" not in r for r in diags[0.0])
    # checks at steps 0, 10, 20, 30 and the last one (40) in round 1: 2**5 = 32; round 2 goes on from there to 64
    assert [r["history_weights"] for r in diags[1.0]] == [[32.0], [64.0]]
    assert gap[1.0] < 0.8 * gap[0.0], gap
    with pytest.raises(ConfigError, match="history_adapt"):
        _cfg(tmp_path, **{"backend.history_adapt": -1.0})


def test_unke_drops_an_earlier_edit_of_the_same_question(llama, tmp_path):
    """Editing a question again replaces its answer: the earlier text asking exactly that is neither kept nor
    replayed, then or in any later edit, while an earlier edit of another question is."""
    from anyedit import EditHistory

    model, tok = llama
    cache = CovarianceCache(tmp_path, False)
    cfg = _cfg(tmp_path, **{"backend.steps": 5, "value.max_steps": 3})
    history = EditHistory()
    anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False, history=history)
    again = EditRequest(REQ.question, "Another answer entirely.")
    d = anyedit.compute_edits(model, tok, again, cfg, stats_cache=cache, show_progress=False,
                              history=history).diagnostics
    assert "history_texts" not in d and len(history.rows) == 2
    d = anyedit.compute_edits(model, tok, EditRequest("Who wrote it?", "A fox."), cfg, stats_cache=cache,
                              show_progress=False, history=history).diagnostics
    assert d["history_texts"] == 1  # the first answer was replaced by the second, which is kept


def test_unke_preserves_against_the_unedited_model_in_sequential_editing(llama, tmp_path):
    """With an earlier edit applied, the preservation conversations are kept as the unedited model has them: an
    update with nothing but the preservation term pulls their layer output back towards the unedited model's
    (preserve_unedited), where keeping them as the earlier edit left them does not move them."""
    from anyedit import EditHistory
    from anyedit.stats.preserve import chat_source

    model, tok = llama
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, False)
    history = EditHistory()
    first = anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{"backend.lr": 0.03}), stats_cache=cache,
                                  show_progress=False, history=history)
    assert set(history.applied) == set(first.deltas)
    cfg = _cfg(tmp_path, **{"backend.edit_weight": 0.0, "backend.kp_weight": 0.0, "backend.history_weight": 0.0,
                            "backend.replay_weight": 0.0, "backend.preserve_weight": 1.0})
    rows = list(chat_source(model, tok, cfg.preserve, cfg.prompt, None).rows())

    def outputs() -> torch.Tensor:
        return torch.cat([trace(model, spec, [r], 2, 2)[0].outputs for r in rows])

    base = outputs()
    drift = {}
    with first.applied(model):
        moved = (outputs() - base).norm()
        for unedited in (True, False):
            h = EditHistory()
            h.merge(history)
            res = anyedit.compute_edits(model, tok, EditRequest("Who wrote it?", "A fox."),
                                        cfg.with_overrides({"backend.preserve_unedited": unedited}),
                                        stats_cache=cache, show_progress=False, history=h)
            with res.applied(model):
                drift[unedited] = ((outputs() - base).norm() / moved).item()
    assert drift[True] < 0.6 * drift[False], drift


def test_a_round_runs_again_while_an_earlier_answer_is_below_its_floor(llama, tmp_path, monkeypatch):
    """A later round's search that needs no step ends the refinement, unless the last update left an earlier
    edit's answer below its margin floor: then the next round's update runs, to win it back."""
    from anyedit import EditHistory
    from anyedit.backends import unke

    model, tok = llama
    cache = CovarianceCache(tmp_path, False)
    over = {"backend.stop_margin": 0.5, "backend.steps": 10, "backend.check_every": 5, "rounds": 2,
            "value.stop_loss": 1e9}  # every chunk counts as reproduced before its first step
    history = EditHistory()
    anyedit.compute_edits(model, tok, REQ, _cfg(tmp_path, **{**over, "rounds": 1}), stats_cache=cache,
                          show_progress=False, history=history)
    spans = [(history.starts[0], len(history.rows[0]))]
    other = EditRequest("Who wrote it?", "It was written by a fox.")

    def run(history_margins):
        seen = {"history": 0}

        def stub(self, out, rows=None):
            if self.spans != spans:
                return [5.0]  # the new answer always passes
            seen["history"] += 1
            return [history_margins[min(seen["history"], len(history_margins)) - 1]]

        monkeypatch.setattr(unke._LayerIO, "answer_margins", stub)
        h = EditHistory()
        h.add({}, history.rows, history.starts)
        return anyedit.compute_edits(model, tok, other, _cfg(tmp_path, **over), stats_cache=cache,
                                     show_progress=False, history=h).diagnostics

    kept = run([1.0])
    assert len(kept["rounds"]) == 1 and kept["reproduced"] is True
    lost = run([1.0, -1.0])  # found at 1.0 (floor 0.5), lost by the update, and not won back
    assert [r["history_margin_vs_floor"] < 0 for r in lost["rounds"]] == [True, True] and "final_check" not in lost
    assert all(steps == 0 for r in lost["rounds"] for steps in r["chunk_steps"])


@pytest.mark.parametrize("decay_to", ["zero", "start"])
def test_unke_weight_decay_pulls_towards_zero_or_towards_where_the_update_began(tiny, tmp_path, decay_to):
    """With every loss weighted 0 the gradients are 0, so only the decay moves the layer: AdamW's ("zero")
    shrinks each matrix by (1 - lr * wd) a step; "start" decays the change since the update began, which is 0."""
    model, tok = tiny
    cfg = _cfg(tmp_path, **{"backend.edit_weight": 0.0, "backend.kp_weight": 0.0, "backend.preserve_weight": 0.0,
                            "backend.steps": 5, "backend.lr": 0.01, "backend.weight_decay": 2.0,
                            "backend.decay_to": decay_to, "rounds": 1})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path, False),
                                show_progress=False)
    params = dict(model.named_parameters())
    mats = {n: d.dense for n, d in res.deltas.items() if d.dense.ndim == 2}
    assert mats
    for n, d in mats.items():
        expected = params[n].detach() * ((1 - 0.01 * 2.0) ** 5 - 1) if decay_to == "zero" else torch.zeros_like(d)
        assert torch.allclose(d, expected, atol=1e-6), n


def test_a_batch_uses_the_configs_batch_settings_and_one_request_does_not(llama, tmp_path):
    model, tok = llama
    cfg = _cfg(tmp_path, **{"backend.steps": 5, "rounds": 1, "value.max_steps": 2}).with_overrides(
        {"batch": {"backend.steps": 7, "backend.preserve_weight": 3.0}})
    cache = CovarianceCache(tmp_path, False)
    one = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=cache, show_progress=False)
    assert one.config == cfg and one.diagnostics["update_steps"] == 5
    two = anyedit.compute_edits(model, tok, [REQ, EditRequest("Who wrote it?", "A fox.")], cfg, stats_cache=cache,
                                show_progress=False)
    assert (two.config.backend.steps, two.config.backend.preserve_weight, two.config.batch) == (7, 3.0, {})
    assert two.diagnostics["update_steps"] == 7


def test_edit_adapt_shifts_the_edit_weight_towards_the_answer_still_short(llama, tmp_path, monkeypatch):
    """With edit_adapt, in an edit of two requests, the text below the stop margin at a check has its weight
    multiplied by 1 + edit_adapt and the weights are rescaled to a mean of 1 over the anchor positions; relative to
    the other text's, its anchors end closer to their targets than with equal weights. The margins are stubbed:
    the first answer always passes, the second never does."""
    from anyedit import EditHistory
    from anyedit.backends import unke

    model, tok = llama
    spec = get_spec(model)
    cache = CovarianceCache(tmp_path, False)
    monkeypatch.setattr(unke._LayerIO, "answer_margins", lambda self, out, rows=None: [1.0, -1.0][: len(self.spans)])
    other = EditRequest("Who wrote it?", "It was written by a fox.")
    over = {"backend.stop_margin": 0.5, "backend.steps": 40, "backend.check_every": 10, "rounds": 1}
    gaps, diags = {}, {}
    for adapt in (0.0, 1.0):
        h = EditHistory()
        res = anyedit.compute_edits(model, tok, [REQ, other], _cfg(tmp_path, **over, **{"backend.edit_adapt": adapt}),
                                    stats_cache=cache, show_progress=False, history=h)
        diags[adapt] = res.diagnostics
        gaps[adapt] = []
        for row, (layer, positions, vectors) in zip(h.rows, h.targets):
            before = trace(model, spec, [row], 2, 2)[0].outputs[positions]
            with res.applied(model):
                after = trace(model, spec, [row], 2, 2)[0].outputs[positions]
            gaps[adapt].append(((after - vectors).norm(dim=1) / (before - vectors).norm(dim=1)).mean().item())
    assert "edit_weights" not in diags[0.0]
    # checks at steps 0, 10, 20, 30 and 40: the second text's weight 2**5 = 32 times the first's, the mean over
    # all anchor positions 1
    w, n = diags[1.0]["edit_weights"], [len(t[1]) for t in h.targets]
    assert w[1] / w[0] == pytest.approx(32, rel=0.1) and (w[0] * n[0] + w[1] * n[1]) / sum(n) == pytest.approx(1, 0.02)
    # relative to the first text's, the second text's anchors end closer to their targets (on this random tiny
    # model both end further than with equal weights: the two texts' anchors pull the layer the same way)
    assert gaps[1.0][1] / gaps[1.0][0] < 0.6 * gaps[0.0][1] / gaps[0.0][0], gaps
    with pytest.raises(ConfigError, match="edit_adapt"):
        _cfg(tmp_path, **{"backend.edit_adapt": -1.0})


def test_repair_edits_again_each_batch_answer_not_reproduced_and_keeps_the_others(llama, tmp_path, monkeypatch):
    """EditConfig.repair: the answers found not reproduced after the batch update (margins stubbed: both short, then
    both back) are edited again on top, one at a time with the single-request settings, each on the model with the
    batch and the repairs before it applied and kept as history. The result is one edit: the batch's weight change
    plus the repairs', its share holding the batch's texts and the repairs'; the model is untouched."""
    from anyedit.editing import compute

    model, tok = llama
    state = {n: p.clone() for n, p in model.state_dict().items()}
    checks = iter([[-1.0, -2.0], [1.0, 1.0]])
    monkeypatch.setattr(compute, "answer_margins", lambda model, rows, starts: next(checks))
    seen = []
    real = compute.compute_edits

    def spy(model, tok, requests, config=None, **kw):  # the repairs: one request, on the edited model
        seen.append((requests[0].question, config, len(kw["history"].rows), len(kw["history"].applied)))
        return real(model, tok, requests, config, **kw)

    other = EditRequest("Who wrote it?", "It was written by a fox.")
    cfg = _cfg(tmp_path, **{"backend.steps": 4, "rounds": 1, "value.max_steps": 2}).with_overrides(
        {"batch": {"backend.steps": 2, "repair": 1}})
    cache = CovarianceCache(tmp_path, False)
    joint = anyedit.compute_edits(model, tok, [REQ, other], cfg.with_overrides({"batch": {"backend.steps": 2}}),
                                  stats_cache=cache, show_progress=False)
    assert "repair" not in joint.diagnostics and len(joint.history.rows) == 2
    monkeypatch.setattr(compute, "compute_edits", spy)
    res = real(model, tok, [REQ, other], cfg, stats_cache=cache, show_progress=False)
    assert all(torch.equal(p, state[n]) for n, p in model.state_dict().items())
    assert res.config.repair == 1 and res.config.backend.steps == 2
    first, last = res.diagnostics["repair"]
    assert first["repaired"] == [0, 1] and [e["request"] for e in first["edits"]] == [0, 1]
    assert last == {"margins": [1.0, 1.0], "repaired": [], "edits": []}
    # each repair: the single-request settings, the batch's texts (and the first repair's) kept, with their changes
    assert [(q, c, n) for q, c, n, _ in seen] == [(REQ.question, cfg, 2), (other.question, cfg, 3)]
    assert all(applied > 0 for *_, applied in seen)
    assert len(res.history.rows) == 4 and res.history.n_edits == 3  # the batch's two texts, then each repair's
    assert res.history.live_rows() == [2, 3]  # the repairs replaced the batch's texts of the same questions
    assert res.deltas.keys() == joint.deltas.keys()
    assert all(not torch.equal(res.deltas[n].full(), joint.deltas[n].full()) for n in res.deltas)


def test_answer_margins_is_the_teacher_forced_argmax_margin_of_each_answer(llama):
    from anyedit.model.logits import answer_margins, argmax_margin

    model, tok = llama
    preps = [prepare_request(tok, r, EditConfig().prompt) for r in (REQ, EditRequest("Who?", "A fox."))]
    got = answer_margins(model, [p.ids for p in preps], [p.prompt_len for p in preps])
    for p, m in zip(preps, got):
        ids = torch.tensor([p.ids])
        logits = model(input_ids=ids).logits[0]
        assert m == pytest.approx(argmax_margin(logits[p.prompt_len - 1: -1], ids[0, p.prompt_len:]), abs=1e-5)
    with pytest.raises(ValueError, match="answer must start"):
        answer_margins(model, [preps[0].ids], [len(preps[0].ids)])


def test_repair_does_nothing_when_the_batch_reproduces_every_answer(llama, tmp_path, monkeypatch):
    """Every answer reproduced after the batch update (margins stubbed positive): no request is edited again and the
    weight changes are exactly those without repair."""
    from anyedit.editing import compute

    model, tok = llama
    monkeypatch.setattr(compute, "answer_margins", lambda model, rows, starts: [1.0] * len(rows))
    other = EditRequest("Who wrote it?", "It was written by a fox.")
    cache = CovarianceCache(tmp_path, False)
    out = {}
    for repair in (0, 2):
        cfg = _cfg(tmp_path, **{"backend.steps": 3, "rounds": 1, "value.max_steps": 2, "repair": repair})
        out[repair] = anyedit.compute_edits(model, tok, [REQ, other], cfg, stats_cache=cache, show_progress=False)
    assert out[2].diagnostics["repair"] == [{"margins": [1.0, 1.0], "repaired": [], "edits": []}]
    assert out[0].deltas.keys() == out[2].deltas.keys()
    assert all(torch.equal(out[0].deltas[n].full(), out[2].deltas[n].full()) for n in out[0].deltas)


def test_lazy_margins_measure_again_only_the_rows_near_their_floor_and_confirm_a_pass_on_every_row():
    from anyedit.backends.unke import _FULL_CHECK_EVERY, _LazyMargins

    calls = []
    now = [5.0, 0.2, 3.0]  # the margins "of the current weights"

    def fn(rows):
        calls.append(rows)
        return [now[i] for i in (range(3) if rows is None else rows)]

    lazy = _LazyMargins([0.5, 0.5, 0.5], slack=1.0)
    assert lazy.measure(fn) == [5.0, 0.2, 3.0] and calls == [None]  # the first check measures every row
    now[:] = [-9.0, 0.3, -9.0]  # the rows well above their floor drop, unseen: only row 1 was near it
    assert lazy.measure(fn) == [5.0, 0.3, 3.0] and calls[-1] == [1]
    now[1] = 0.6  # row 1 passes: every row passes by what is known, so the others are measured too
    assert lazy.measure(fn) == [-9.0, 0.6, -9.0] and calls[-2:] == [[1], [0, 2]]
    assert lazy.measure(fn, confirm=False) == [-9.0, 0.6, -9.0] and calls[-1] is None  # all near or below now
    now[:] = [2.0, 2.0, 2.0]
    assert lazy.measure(fn, confirm=False) == [2.0, 2.0, 2.0]  # all were near their floor
    assert lazy.checks == 5 and _FULL_CHECK_EVERY == 5
    now[:] = [-1.0, -1.0, -1.0]
    assert lazy.measure(fn, confirm=False) == [-1.0, -1.0, -1.0]  # the fifth check measures every row
    now[:] = [2.0, 2.0, 2.0]
    lazy.measure(fn, confirm=False)
    now[:] = [3.0, 3.0, 3.0]
    n = len(calls)
    assert lazy.measure(fn, confirm=False) == [2.0, 2.0, 2.0] and len(calls) == n  # all well above: none measured
    assert lazy.measure(fn) == [3.0, 3.0, 3.0] and calls[n:] == [None]  # a pass is confirmed on every row
    assert (lazy.measured, lazy.possible) == (3 + 1 + 3 + 3 + 3 + 3 + 3 + 0 + 3, 27)
    every = _LazyMargins([0.5, 0.5, 0.5], slack=None)
    calls.clear()
    for _ in range(3):
        every.measure(fn)
    assert calls == [None, None, None] and every.measured == every.possible == 9


def test_answer_margins_of_some_rows_are_those_rows_margins(llama, tmp_path):
    from anyedit.backends import unke
    from anyedit.backends.base import EditContext

    model, tok = llama
    cfg = _cfg(tmp_path)
    preps = [prepare_request(tok, r, cfg.prompt) for r in (REQ, EditRequest("Who wrote it?", "A fox wrote it."),
                                                           EditRequest("Why?", "Because it could, in the end."))]
    ctx = EditContext.__new__(EditContext)
    object.__setattr__(ctx, "spec", get_spec(model))
    io = unke._LayerIO(model, ctx, 2, [p.ids for p in preps], starts=[p.prompt_len for p in preps])
    every = io.answer_margins(io.outputs)
    assert io.answer_margins(io.outputs[[2, 0]], [2, 0]) == pytest.approx([every[2], every[0]], abs=1e-5)


def test_check_slack_spares_margin_checks_and_leaves_the_update_as_it_is(llama, tmp_path, monkeypatch):
    """Without edit_adapt and history_adapt, the update decides to stop on the same margins with and without
    check_slack, so the two edits are the same; with it, fewer answer margins are measured. (The tiny model never
    reproduces an answer, so each row's margin is stubbed by a pseudo-random function of its layer output: like a
    real margin, it depends only on the weights and the row.)"""
    from anyedit.backends import unke

    model, tok = llama
    cache = CovarianceCache(tmp_path, False)

    def margins(self, out, rows=None):
        return [(out[b].double().sum().item() * 1000) % 1.0 for b in range(out.shape[0])]

    monkeypatch.setattr(unke._LayerIO, "answer_margins", margins)
    reqs = [REQ, EditRequest("Who wrote it?", "It was written by a fox."), EditRequest("Why?", "Because it could.")]
    over = {"backend.stop_margin": 0.5, "backend.steps": 30, "backend.check_every": 2, "rounds": 1,
            "value.max_steps": 10}
    res = {s: anyedit.compute_edits(model, tok, reqs, _cfg(tmp_path, **over, **{"backend.check_slack": s}),
                                    stats_cache=cache, show_progress=False) for s in (None, 0.0)}
    assert res[None].diagnostics["update_steps"] == res[0.0].diagnostics["update_steps"]
    assert all(torch.equal(res[None].deltas[n].dense, d.dense) for n, d in res[0.0].deltas.items())
    assert "margins_measured" not in res[None].diagnostics
    measured, possible = res[0.0].diagnostics["margins_measured"]
    assert measured < possible, (measured, possible)
    with pytest.raises(ConfigError, match="check_slack"):
        _cfg(tmp_path, **{"backend.check_slack": -1.0})
