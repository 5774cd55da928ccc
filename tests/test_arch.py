from __future__ import annotations

import pytest

from anyedit.errors import UnsupportedArchitectureError
from anyedit.model.arch import ArchSpec, default_layers, get_spec, key_dim, register_arch, supported_model_types

from .tiny import tiny_model

FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "gpt2", "gptj", "gpt_neox"]


@pytest.mark.parametrize("kind", FAMILIES)
def test_every_family_resolves_on_a_real_module_tree(kind):
    model = tiny_model(kind)
    spec = get_spec(model)
    assert spec.model_type == model.config.model_type
    assert key_dim(model, spec, 0) == 128  # the MLP width we configured
    w = model.get_submodule(spec.mlp_out_path(3)).weight
    assert w.shape == ((64, 128) if spec.mlp_out_layout == "out_in" else (128, 64))
    assert model.get_submodule(spec.lm_head).weight.shape[1] == 64


def test_unknown_type_lists_supported_and_how_to_register():
    model = tiny_model("llama")
    model.config.model_type = "martian"
    with pytest.raises(UnsupportedArchitectureError) as e:
        get_spec(model)
    msg = str(e.value)
    assert "martian" in msg and "llama" in msg and "register_arch" in msg


def test_wrong_declared_layout_is_caught():
    model = tiny_model("gpt2")
    model.config.model_type = "gpt2-wrong-layout"
    register_arch(ArchSpec("gpt2-wrong-layout", layers="transformer.h", mlp_out="mlp.c_proj",
                           mlp_out_layout="out_in", final_norm="transformer.ln_f", lm_head="lm_head"))
    with pytest.raises(UnsupportedArchitectureError, match="layout"):
        get_spec(model)
    with pytest.raises(UnsupportedArchitectureError, match="already registered"):
        register_arch(ArchSpec("llama", "model.layers", "mlp.down_proj", "out_in", "model.norm", "lm_head"))


def test_default_layers_scale_with_depth():
    assert default_layers(32) == (4, 5, 6, 7, 8)
    assert default_layers(30) == (4, 5, 6, 7, 8)
    assert default_layers(4) == (0, 1)
    assert default_layers(1) == (0,)
    assert "llama" in supported_model_types() and "gpt2" in supported_model_types()
