from __future__ import annotations

import json
import warnings

import pytest

from anyedit.backends.memit import MemitConfig
from anyedit.config import ChunkingConfig, EditConfig, StatsConfig, ValueConfig
from anyedit.errors import ConfigError


def test_round_trip_json():
    cfg = EditConfig(layers=(3, 4, 5), chunking=ChunkingConfig(mode="sentence", window=25, overlap=5),
                     value=ValueConfig(lr=0.1, max_steps=50), backend=MemitConfig(mom2_weight=300.0, kp_weight=0.0))
    back = EditConfig.from_json(cfg.to_json())
    assert back == cfg
    assert json.loads(cfg.to_json())["backend"]["mom2_weight"] == 300.0


def test_overrides_use_dotted_paths():
    cfg = EditConfig().with_overrides({"chunking.window": 20, "backend.mom2_weight": 500, "layers": [1, 2]})
    assert cfg.chunking.window == 20 and cfg.backend.mom2_weight == 500 and cfg.layers == (1, 2)
    with pytest.raises(ConfigError, match="chunking.windw"):
        EditConfig().with_overrides({"chunking.windw": 20})
    with pytest.raises(ConfigError, match="backend"):
        EditConfig().with_overrides({"backend.nonsense": 1})


@pytest.mark.parametrize("make,field", [
    (lambda: ChunkingConfig(window=0), "window"),
    (lambda: ChunkingConfig(window=10, overlap=10), "overlap"),
    (lambda: ChunkingConfig(mode="paragraph"), "mode"),
    (lambda: ValueConfig(lr=-1), "lr"),
    (lambda: ValueConfig(clamp_norm=float("nan")), "clamp_norm"),
    (lambda: StatsConfig(n_tokens=0), "n_tokens"),
    (lambda: MemitConfig(mom2_weight=-5), "mom2_weight"),
    (lambda: EditConfig(layers=(5, 4)), "layers"),
    (lambda: EditConfig(method="nope"), "nope"),
])
def test_invalid_values_name_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_unknown_keys_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="typo"):
        cfg = EditConfig.from_dict({"method": "memit", "chunking": {"window": 7, "typo": 1}})
    assert cfg.chunking.window == 7


def test_backend_must_match_method():
    with pytest.raises(ConfigError, match="MemitConfig"):
        EditConfig(method="memit", backend=ChunkingConfig())  # type: ignore[arg-type]


def test_presets_pick_a_method_and_valid_layers():
    from anyedit.editing.presets import entry_config, load_presets, preset_config

    from .tiny import tiny_model

    model = tiny_model("llama")
    for method in (None, "memit", "unke"):
        cfg = preset_config(model, method)
        assert cfg.layers and max(cfg.layers) < 4
        if cfg.method == "unke":
            assert len(cfg.layers) == 1
    for entry in load_presets():  # every preset entry is a valid config and says how it was chosen
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a misspelt key would only be dropped with a warning
            entry_config(entry)
        assert entry["measured_by"] and entry["name"]


def test_a_named_preset_is_its_base_with_its_overrides_and_only_used_when_asked_for():
    from anyedit.editing.presets import named_presets, preset_config, preset_name

    from .tiny import tiny_model

    model = tiny_model("llama")
    default = preset_config(model)
    assert preset_name(model) == "small-chat-unke" and default.chunking.first_window == 0
    assert "small-chat-unke-paraphrase" in named_presets(model) and named_presets(model, "memit") == []
    para = preset_config(model, name="small-chat-unke-paraphrase")
    assert preset_name(model, name="small-chat-unke-paraphrase") == "small-chat-unke-paraphrase"
    assert (para.chunking.first_window, para.backend.stop_margin, para.backend.history_margin) == (5, 1.0, 0.25)
    assert (para.backend.preserve_weight, para.backend.history_adapt) == (10.0, 0.0)  # as it was measured
    assert para.with_overrides({"chunking.first_window": 0, "backend.stop_margin": default.backend.stop_margin,
                                "backend.history_margin": None, "backend.preserve_weight": 30.0,
                                "backend.history_adapt": 1.0, "batch": default.batch}).to_dict() == default.to_dict()
    with pytest.raises(ConfigError, match="no preset named 'nope'.*small-chat-unke-paraphrase"):
        preset_config(model, name="nope")
    with pytest.raises(ConfigError, match="does not fit this model .* and method 'memit'"):
        preset_config(model, "memit", name="small-chat-unke-paraphrase")


def test_a_value_layer_the_edited_layers_cannot_move_is_refused_before_any_work(llama, tmp_path):
    import anyedit
    from anyedit.stats.covariance import CovarianceCache

    with pytest.raises(ConfigError, match="ValueConfig.layer=3 is below the edited layer 4"):
        EditConfig().with_overrides({"layers": [2, 4], "value.layer": 3})
    assert EditConfig().with_overrides({"layers": [2, 4], "value.layer": 5}).value.layer == 5
    model, tok = llama  # layers left to the preset: checked once they are resolved, before statistics
    cfg = EditConfig().with_overrides({"value.layer": 0})
    with pytest.raises(ConfigError, match="ValueConfig.layer=0 is below the edited layer"):
        anyedit.compute_edits(model, tok, anyedit.EditRequest("Q?", "An answer."), cfg,
                              stats_cache=CovarianceCache(tmp_path / "stats", False), show_progress=False)
    assert not (tmp_path / "stats").exists() or not any((tmp_path / "stats").iterdir())


def test_batch_settings_round_trip_apply_to_a_batch_and_yield_to_explicit_settings():
    cfg = EditConfig(method="unke").with_overrides({"batch": {"backend.steps": 300, "chunking.window": 12}})
    assert EditConfig.from_json(cfg.to_json()) == cfg
    batch = cfg.for_batch()
    assert (batch.backend.steps, batch.chunking.window, batch.batch) == (300, 12, {})
    assert batch.for_batch() == batch and EditConfig(method="unke").for_batch() == EditConfig(method="unke")
    mine = cfg.with_overrides({"backend.steps": 50})  # given explicitly (--set): it wins in a batch too
    assert mine.batch == {"chunking.window": 12} and mine.for_batch().backend.steps == 50
    assert cfg.with_overrides({"method": "memit"}).batch == {}  # the old method's batch settings go with it
    d = cfg.to_dict()
    d["batch"]["backend.steps"] = 1  # to_dict hands out a copy
    assert cfg.batch["backend.steps"] == 300
    for bad, why in (({"backend.nope": 1}, "EditConfig.batch: unknown config field 'backend.nope'"),
                     ({"backend.steps": 0}, "EditConfig.batch: .*steps"),
                     ({"method": "memit"}, "cannot set method"), ([1], "must be an object")):
        with pytest.raises(ConfigError, match=why):
            EditConfig(method="unke").with_overrides({"batch": bad})


def test_the_default_preset_has_batch_settings_that_apply_only_to_a_batch():
    from anyedit.editing.presets import preset_config

    from .tiny import tiny_model

    cfg = preset_config(tiny_model("llama"))
    batch = cfg.for_batch()
    assert (cfg.backend.steps, cfg.chunking.shared_prefix, cfg.repair) == (100, "all", 0)
    assert (batch.backend.steps, batch.chunking.shared_prefix, batch.repair, batch.batch) == (300, "earlier", 1, {})
    assert EditConfig.from_dict(batch.to_dict()).repair == 1
    with pytest.raises(ConfigError, match="repair"):
        cfg.with_overrides({"repair": -1})
