from __future__ import annotations

import json

import pytest
import torch

import anyedit
from anyedit import EditConfig, EditRequest, load_edits
from anyedit.errors import EditFormatError, FingerprintMismatchError
from anyedit.stats import CovarianceCache

from .tiny import tiny_model

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
    before = {n: p.clone() for n, p in other.state_dict().items()}
    with pytest.raises(FingerprintMismatchError):
        load_edits(d).apply(other)
    assert all(torch.equal(p, before[n]) for n, p in other.state_dict().items())


def test_an_already_edited_model_is_refused(saved):
    model, _, d = saved
    e = load_edits(d)
    e.apply(model)
    with pytest.raises(FingerprintMismatchError, match="already edited"):
        load_edits(d).apply(model)
    e.revert(model)


@pytest.mark.parametrize("damage", ["missing_manifest", "missing_tensors", "bad_json", "bad_tensors", "bad_shape",
                                    "not_a_dir"])
def test_corrupt_directories_give_clear_errors(saved, damage, tmp_path):
    _, _, d = saved
    if damage == "missing_manifest":
        (d / "edit.json").unlink()
    elif damage == "missing_tensors":
        (d / "deltas.safetensors").unlink()
    elif damage == "bad_json":
        (d / "edit.json").write_text("{not json")
    elif damage == "bad_tensors":
        (d / "deltas.safetensors").write_bytes(b"garbage")
    elif damage == "bad_shape":
        man = json.loads((d / "edit.json").read_text())
        for v in man["touched"].values():
            v["shape"] = [1, 1]
        (d / "edit.json").write_text(json.dumps(man))
    else:
        d = tmp_path / "nothing-here"
    with pytest.raises(EditFormatError):
        load_edits(d)
