from __future__ import annotations

import json

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditRequest, load_edits
from anyedit.errors import EditFormatError, FingerprintMismatchError
from anyedit.stats.covariance import CovarianceCache

from .tiny import same_weights, tiny_model, tiny_tokenizer, weights_of

REQ = EditRequest("What is the answer?", "The capital of France is Paris.", id="r1")


@pytest.fixture
def saved(tiny, corpus_file, tmp_path):
    model, tok = tiny
    cfg = EditConfig().with_overrides({"layers": [1, 2], "chunking.window": 4, "value.max_steps": 3,
                                       "stats.corpus": str(corpus_file), "stats.n_tokens": 500,
                                       "stats.max_len": 32})
    res = anyedit.compute_edits(model, tok, REQ, cfg, stats_cache=CovarianceCache(tmp_path / "c", False),
                                show_progress=False)
    return model, res, res.save(tmp_path / "edit")


def test_round_trip_applies_identically(saved):
    model, res, d = saved
    loaded = load_edits(d)
    assert loaded.config == res.config and loaded.requests == res.requests
    for n, delta in res.deltas.items():
        torch.testing.assert_close(loaded.deltas[n].full(), delta.full(), rtol=0, atol=0)
        assert loaded.deltas[n].rank == delta.rank  # stored as low-rank factors
    with res.applied(model):
        a = {n: p.clone() for n, p in model.named_parameters()}
    with loaded.applied(model):
        b = {n: p.clone() for n, p in model.named_parameters()}
    assert all(torch.equal(a[n], b[n]) for n in a)
    man = json.loads((d / "edit.json").read_text())
    assert man["anyedit_version"] == anyedit.__version__
    assert set(man["touched"]) == set(res.deltas)
    assert all(len(v["sha256"]) == 64 for v in man["touched"].values())


def test_a_different_model_is_refused(saved):
    _, _, d = saved
    other = tiny_model("llama", seed=7)
    before = weights_of(other)
    with pytest.raises(FingerprintMismatchError):
        load_edits(d).apply(other)
    assert same_weights(other, before)


def test_an_already_edited_model_is_refused(saved):
    model, _, d = saved
    e = load_edits(d)
    e.apply(model)
    with pytest.raises(FingerprintMismatchError, match="already edited"):
        load_edits(d).apply(model)
    e.revert(model)


@pytest.mark.parametrize("damage,message", [
    ("missing_manifest", "not a saved edit: edit.json is missing"),
    ("missing_tensors", "not a saved edit: deltas.safetensors is missing"),
    ("bad_json", "edit.json is not valid JSON"),
    ("old_version", "unsupported or missing format_version"),
    ("bad_tensors", "deltas.safetensors is corrupt"),
    ("bad_shape", "has shape .* manifest says"),
    ("a_file", "edit directory not found"),
    ("other_tensors", "SHA-256 differs"),
])
def test_corrupt_directories_give_clear_errors(saved, damage, message, tmp_path):
    import hashlib

    _, _, d = saved
    man = json.loads((d / "edit.json").read_text())
    if damage == "missing_manifest":
        (d / "edit.json").unlink()
    elif damage == "missing_tensors":
        (d / "deltas.safetensors").unlink()
    elif damage == "bad_json":
        (d / "edit.json").write_text("{not json")
    elif damage == "old_version":
        man["format_version"] = -1
        (d / "edit.json").write_text(json.dumps(man))
    elif damage == "bad_tensors":  # garbage that the manifest's hash agrees with: the safetensors parser refuses it
        (d / "deltas.safetensors").write_bytes(b"garbage")
        man["tensors_sha256"] = hashlib.sha256(b"garbage").hexdigest()
        (d / "edit.json").write_text(json.dumps(man))
    elif damage == "bad_shape":
        for v in man["touched"].values():
            v["shape"] = [1, 1]
        (d / "edit.json").write_text(json.dumps(man))
    elif damage == "other_tensors":  # same names and shapes, other values: a save interrupted between its renames
        from safetensors.torch import load_file, save_file

        f = str(d / "deltas.safetensors")
        save_file({k: 2 * v for k, v in load_file(f).items()}, f)
    else:
        d = tmp_path / "a-file"
        d.write_text("not a directory")
    with pytest.raises(EditFormatError, match=message):
        load_edits(d)


def test_save_writes_whole_files_and_refuses_a_file_path(saved, tmp_path):
    _, res, d = saved
    files = ["deltas.safetensors", "edit.json", "history.safetensors"]
    assert sorted(p.name for p in d.iterdir()) == files  # no temporary files left
    res.save(d)  # overwriting an edit
    assert sorted(p.name for p in d.iterdir()) == files and load_edits(d).deltas
    # the edit's share for sequential editing comes back with it: its keys and its text's token ids
    loaded = load_edits(d).history
    assert loaded.rows == res.history.rows and len(loaded.rows) == 1
    assert set(loaded.sums) == set(res.history.sums) and loaded.n_edits == 1
    (d / "history.safetensors").write_bytes(b"not it")
    with pytest.raises(EditFormatError, match="history.safetensors"):
        load_edits(d)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(EditFormatError, match="is a file, not a directory"):
        res.save(tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "x"


def test_replacing_leaves_the_target_whole(tmp_path):
    from anyedit._io import replacing

    p = tmp_path / "stats.safetensors"
    with replacing(p) as a, replacing(p) as b:  # two writers of the same file at once
        a.write_text("first")
        b.write_text("second")
    assert p.read_text() == "first" and [x.name for x in tmp_path.iterdir()] == [p.name]
    plain = tmp_path / "plain"
    plain.write_text("x")  # a file written the ordinary way gets the process's usual mode
    assert p.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's private 0600
    plain.unlink()
    with pytest.raises(RuntimeError), replacing(p) as c:
        c.write_text("half")
        raise RuntimeError("killed while writing")
    assert p.read_text() == "first" and [x.name for x in tmp_path.iterdir()] == [p.name]


def test_statistics_of_an_edited_model_are_not_cached_under_the_base_model(saved, corpus_file, tmp_path, caplog,
                                                                             monkeypatch):
    from anyedit.config import StatsConfig
    from anyedit.model.arch import get_spec
    from anyedit.model.weights import edits_applied

    model, res, _ = saved
    cfg = StatsConfig(corpus=str(corpus_file), n_tokens=300, max_len=32)
    cache = CovarianceCache(tmp_path / "cold", False)
    tok = __import__("tests.tiny", fromlist=["tiny_tokenizer"]).tiny_tokenizer()
    import anyedit.stats.covariance as stats_mod

    passes = []
    real_pass = stats_mod.compute_second_moments
    monkeypatch.setattr(stats_mod, "compute_second_moments", lambda *a, **k: passes.append(1) or real_pass(*a, **k))
    with res.applied(model):
        assert edits_applied(model) == 1
        with caplog.at_level("WARNING", logger="anyedit.stats.covariance"):
            edited = cache.get(model, tok, get_spec(model), [2], cfg)[2]  # keys after the edited layer 1
        assert "1 edit(s) applied" in caplog.text
        assert not list((tmp_path / "cold").rglob("*.safetensors"))  # nothing stored under the base identity
        assert torch.equal(cache.get(model, tok, get_spec(model), [2], cfg)[2], edited) and len(passes) == 1
    assert edits_applied(model) == 0
    base = cache.get(model, tok, get_spec(model), [2], cfg)[2]  # computed again, on the unedited model
    assert not torch.equal(base, edited) and len(list((tmp_path / "cold").rglob("*.safetensors"))) == 1


def _failing_edit_leaves_the_model_as_it_was(model, res, cache_dir, message):
    """Under the caller's applied edit ``res``, a 3-round compute_edits that raises ``message`` leaves the weights
    and the edit count (1: the caller's) as they were; afterwards the count is back to 0."""
    from anyedit.model.weights import edits_applied

    cfg = res.config.with_overrides({"rounds": 3, "value.stop_loss": 0.0})
    with res.applied(model):
        state = weights_of(model)
        with pytest.raises(RuntimeError, match=message):
            anyedit.compute_edits(model, tiny_tokenizer(), REQ, cfg, stats_cache=CovarianceCache(cache_dir, False),
                                  show_progress=False)
        assert edits_applied(model) == 1
        assert same_weights(model, state)
    assert edits_applied(model) == 0


def test_a_failed_refinement_round_leaves_the_edit_count_right(saved, corpus_file, tmp_path, monkeypatch):
    """compute_edits restores its own deltas when a later round fails; the caller's applied edit stays counted
    (a restore counted twice would let an edited model's statistics be cached as the base model's)."""
    import anyedit.editing.compute as editing

    model, res, _ = saved
    calls = []
    real_apply = editing.apply_deltas

    def fails_second_time(model, deltas):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("round 3 failed")
        return real_apply(model, deltas)

    monkeypatch.setattr(editing, "apply_deltas", fails_second_time)
    _failing_edit_leaves_the_model_as_it_was(model, res, tmp_path / "c2", "round 3 failed")
    assert len(calls) == 2


def test_a_round_failing_after_its_apply_puts_the_weights_back(saved, corpus_file, tmp_path, monkeypatch):
    """Round 2 applies round 1's deltas, then its value search fails: compute_edits takes them off again."""
    import anyedit.editing.compute as editing
    from anyedit.model.weights import edits_applied

    model, res, _ = saved
    real_apply, real_search = editing.apply_deltas, editing.search_values
    applied = []

    def counting_apply(model, deltas):
        applied.append(1)
        return real_apply(model, deltas)

    def fails_after_an_apply(*args, **kw):
        if applied:
            assert edits_applied(args[0]) == 2  # the caller's edit and round 1's deltas are on the model
            raise RuntimeError("round 2 failed")
        return real_search(*args, **kw)

    monkeypatch.setattr(editing, "apply_deltas", counting_apply)
    monkeypatch.setattr(editing, "search_values", fails_after_an_apply)
    _failing_edit_leaves_the_model_as_it_was(model, res, tmp_path / "c3", "round 2 failed")
    assert applied == [1]


def test_the_history_keeps_each_texts_value_targets(saved, tmp_path):
    """history.safetensors stores, per edit text, the layer, anchor positions and target vectors of its value
    search (what later UnKE updates replay); a history without them (an earlier format) loads with none."""
    from anyedit import EditHistory

    _, res, d = saved
    (layer, positions, vectors), = res.history.targets
    assert positions == [a for r in res.reports[0] for a in r["anchors"]] and vectors.shape[0] == len(positions)
    loaded = load_edits(d).history
    (layer2, positions2, vectors2), = loaded.targets
    assert (layer2, positions2) == (layer, positions) and torch.equal(vectors2, vectors)
    assert loaded.targets_at(layer)[0][0] == positions and loaded.targets_at(layer + 1) == [None]
    bare = EditHistory()
    bare.add({}, res.history.rows, res.history.starts)
    again = EditHistory.load(bare.save(tmp_path / "bare.safetensors"))
    assert again.rows == res.history.rows and again.targets == [None]


def test_relative_change_is_the_change_over_the_weights_it_was_applied_to(llama):
    """||change||_F / ||weights before||_F over the changed matrices, measured with the change applied; vectors
    (norm weights) are not counted."""
    from anyedit.model.weights import Delta, apply_deltas, relative_change, restore

    model, _ = llama
    name = "model.layers.1.mlp.down_proj.weight"
    w = dict(model.named_parameters())[name].detach().clone()
    change = Delta(dense=0.5 * w.float())  # half the weights: moved by 0.5 of their norm
    norm = "model.layers.1.input_layernorm.weight"
    big = Delta(dense=torch.full_like(dict(model.named_parameters())[norm].float(), 100.0))
    backup = apply_deltas(model, {name: change, norm: big})
    try:
        assert relative_change(model, {name: change, norm: big}) == pytest.approx(0.5, rel=1e-5)
    finally:
        restore(model, backup)
    assert torch.equal(dict(model.named_parameters())[name], w)
