"""The things written once: model-state context managers, the input device, the method registry, the layer checks,
the JSON/JSONL reader, fresh files, the model's name kept beside it, and the public API."""

from __future__ import annotations

import json

import pytest
import torch

import anyedit
from anyedit._io import fresh_dir, fresh_file, read_records
from anyedit.config import EditConfig, check_layers, get_method, known_methods, register_method
from anyedit.errors import ConfigError, CorpusError, RequestError
from anyedit.eval.runner import EvalSettings
from anyedit.model.arch import model_identity, set_model_name
from anyedit.model.state import eval_mode, input_device, training

from .tiny import tiny_model


def test_training_restores_values_flags_and_mode_even_when_the_block_fails():
    model = tiny_model("llama")
    model.train()
    w = model.get_parameter("model.layers.1.mlp.down_proj.weight")
    other = model.get_parameter("model.layers.0.mlp.down_proj.weight")
    other.requires_grad_(False)  # a caller's own flag, put back as it was
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="stop"), training(model, [w]) as original:
        assert not model.training and w.requires_grad
        assert [n for n, p in model.named_parameters() if p.requires_grad] == ["model.layers.1.mlp.down_proj.weight"]
        torch.testing.assert_close(original[0], before["model.layers.1.mlp.down_proj.weight"], rtol=0, atol=0)
        with torch.no_grad():
            w.add_(1.0)
        raise RuntimeError("stop")
    assert model.training and not other.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "model.layers.0.mlp.down_proj.weight")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_eval_mode_puts_the_mode_back_and_inputs_go_to_the_embeddings_device():
    model = tiny_model("gpt2")
    model.train()
    with eval_mode(model):
        assert not model.training
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training
    assert input_device(model) == model.get_input_embeddings().weight.device


def test_one_method_registry_and_one_unknown_method_error():
    assert {"memit", "alphaedit", "unke", "rome", "ft"} <= set(known_methods())
    assert get_method("memit").config is anyedit.MemitConfig
    for call in (lambda: get_method("nope"), lambda: EditConfig(method="nope"),
                 lambda: anyedit.preset_config(tiny_model("llama"), "nope")):
        with pytest.raises(ConfigError, match="unknown method 'nope'; known methods: alphaedit, ft, memit"):
            call()
    with pytest.raises(ConfigError, match="already registered"):
        register_method("memit", object, anyedit.MemitConfig)
    with pytest.raises(ConfigError, match="must subclass BackendConfig"):
        register_method("another", object, dict)  # type: ignore[arg-type]
    assert "another" not in known_methods()


@pytest.mark.parametrize("method,layers,value,n,why", [
    ("memit", [], None, None, "non-empty list"),
    ("memit", [2, 1], None, None, "strictly increasing"),
    ("memit", [1, -1], None, None, "integer >= 0"),
    ("rome", [1, 2], None, None, "edits exactly one layer"),
    ("memit", [1, 4], None, 4, "the model has 4 layers"),
    ("memit", [1, 2], 4, 4, "ValueConfig.layer=4: the model has 4 layers"),
    ("memit", [1, 2], 1, None, "below the edited layer 2"),
    ("unke", [1], 2, None, "set value.layer to the edited layer"),
])
def test_the_one_layer_check(method, layers, value, n, why):
    with pytest.raises(ConfigError, match=why):
        check_layers(method, layers, value, n)


def test_layer_checks_are_the_same_in_the_config_and_at_edit_time():
    model, tok = tiny_model("llama"), None
    check_layers("memit", [1, 2], 3, 4)  # fine
    with pytest.raises(ConfigError, match="strictly increasing"):
        EditConfig(layers=(2, 1))
    with pytest.raises(ConfigError, match="the model has 4 layers"):
        anyedit.compute_edits(model, tok, anyedit.EditRequest("Q?", "A."), EditConfig(layers=(1, 7)))


def test_read_records_reads_json_lists_objects_and_jsonl_with_one_clear_error(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert read_records(f) == [{"a": 1}, {"a": 2}]
    f.write_text(json.dumps({"a": 1}))
    assert read_records(f) == [{"a": 1}]
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_records(f) == [{"a": 1}, {"a": 2}]
    f.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(RequestError, match=r"r.json, line 2: not valid JSON"):
        read_records(f)
    f.write_text("{broken")
    with pytest.raises(CorpusError, match="the things .*r.json is not valid JSON: neither a JSON list nor JSONL"):
        read_records(f, "the things", CorpusError)
    f.write_text("[]")
    with pytest.raises(RequestError, match="holds no records"):
        read_records(f)
    with pytest.raises(RequestError, match="dataset file not found: .*none.json"):
        read_records(tmp_path / "none.json", "dataset file")


def test_fresh_files_and_directories_are_new_and_get_the_usual_mode(tmp_path):
    plain_file, plain_dir = tmp_path / "plain", tmp_path / "plain-dir"
    plain_file.write_text("")
    plain_dir.mkdir()
    a, b = fresh_file(tmp_path / "sub", ".x.", ".partial"), fresh_file(tmp_path / "sub", ".x.", ".partial")
    d = fresh_dir(tmp_path, ".m.", ".partial")
    assert a != b and a.is_file() and b.is_file() and d.is_dir() and a.name.startswith(".x.")
    assert a.stat().st_mode & 0o777 == plain_file.stat().st_mode & 0o777
    assert d.stat().st_mode & 0o777 == plain_dir.stat().st_mode & 0o777


def test_the_models_name_is_kept_beside_it_not_in_its_config(tmp_path):
    model = tiny_model("qwen2")
    set_model_name(model, "my-model")
    assert model_identity(model)["name_or_path"] == "my-model"
    model.save_pretrained(tmp_path)
    assert "my-model" not in (tmp_path / "config.json").read_text()
    assert model_identity(tiny_model("qwen2"))["name_or_path"] != "my-model"


def test_configs_that_call_unkes_same_text_weight_keep_weight_still_load():
    cfg = EditConfig.from_dict({"method": "unke", "layers": [1], "backend": {"keep_weight": 3.0}})
    assert cfg.backend.kp_weight == 3.0
    assert "keep_weight" not in cfg.to_dict()["backend"]


def test_eval_settings_are_validated_and_round_trip():
    s = EvalSettings(n_probes=3, sample_temperature=0.5)
    assert EvalSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ConfigError, match="EvalSettings.n_probes=-1"):
        EvalSettings(n_probes=-1)
    with pytest.raises(ConfigError, match="EvalSettings.compat='yes'"):
        EvalSettings(compat="yes")  # type: ignore[arg-type]


def test_the_public_api_exports_what_the_readme_uses():
    for name in ("load_model", "EditRequest", "compute_edits", "generate", "EditResult", "load_edits", "EditConfig",
                 "preset_config", "EditHistory", "ValueCache", "prepare_statistics", "ChunkingConfig",
                 "MemitConfig", "AlphaEditConfig", "UnkeConfig", "AnyEditError", "ConfigError", "EditFormatError",
                 "FingerprintMismatchError", "register_arch", "ArchSpec", "__version__"):
        assert name in anyedit.__all__ and hasattr(anyedit, name), name
    assert anyedit.load_edits.__doc__ and anyedit.EditResult.load
    from importlib.metadata import version

    assert anyedit.__version__ == version("anyedit")


def test_a_jsonl_corpus_is_streamed_line_by_line(tmp_path):
    from anyedit.stats.corpus import iter_texts

    f = tmp_path / "corpus.jsonl"
    f.write_text('{"text": "first"}\n\n{"text": "second"}\n{"text": broken\n')
    texts = iter_texts(str(f))
    assert [next(texts), next(texts)] == ["first", "second"]  # read before the broken line is reached
    with pytest.raises(CorpusError, match=r"corpus file .*corpus.jsonl, line 4: not valid JSON"):
        next(texts)
    f.write_text("not json\n")
    with pytest.raises(CorpusError, match=r"corpus.jsonl, line 1: not valid JSON"):
        list(iter_texts(str(f)))
