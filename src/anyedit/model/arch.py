"""Where things are inside a Hugging Face causal LM: one declarative spec per ``config.model_type``.

A spec names the decoder-layer list, the MLP output projection inside a layer (the matrix the closed-form
methods rewrite) and its weight layout, the final norm and the LM head. Layouts are declared, never
guessed from shapes: ``"out_in"`` is ``nn.Linear`` (weight is ``[out, in]``), ``"in_out"`` is GPT-2's
``Conv1D`` (weight is ``[in, out]``).

Add a family with :func:`register_arch`.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError

WeightLayout = Literal["out_in", "in_out"]


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one model family (relative to the ``*ForCausalLM`` model)."""

    model_type: str
    layers: str
    mlp_out: str  # relative to a decoder layer
    mlp_out_layout: WeightLayout
    final_norm: str
    lm_head: str
    # True where a norm sits between the MLP output projection and the residual stream (Gemma 2/3):
    # MEMIT's linear key->value assumption then holds only approximately.
    mlp_post_norm: bool = False

    def layer_path(self, i: int) -> str:
        return f"{self.layers}.{i}"

    def mlp_out_path(self, i: int) -> str:
        return f"{self.layers}.{i}.{self.mlp_out}"

    def mlp_out_weight_name(self, i: int) -> str:
        return f"{self.mlp_out_path(i)}.weight"


_LLAMA_LIKE = dict(layers="model.layers", mlp_out="mlp.down_proj", mlp_out_layout="out_in",
                   final_norm="model.norm", lm_head="lm_head")

_SPECS: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> None:
    """Register a model family. A ``model_type`` can be registered only once."""
    if spec.model_type in _SPECS:
        raise UnsupportedArchitectureError(f"an architecture spec for {spec.model_type!r} is already registered")
    if spec.mlp_out_layout not in ("out_in", "in_out"):
        raise UnsupportedArchitectureError(f"mlp_out_layout must be 'out_in' or 'in_out', got {spec.mlp_out_layout!r}")
    _SPECS[spec.model_type] = spec


for _t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo2", "granite", "smollm3"):
    register_arch(ArchSpec(model_type=_t, **_LLAMA_LIKE))  # type: ignore[arg-type]
for _t in ("gemma2", "gemma3_text"):
    register_arch(ArchSpec(model_type=_t, mlp_post_norm=True, **_LLAMA_LIKE))  # type: ignore[arg-type]
register_arch(ArchSpec("gpt2", layers="transformer.h", mlp_out="mlp.c_proj", mlp_out_layout="in_out",
                       final_norm="transformer.ln_f", lm_head="lm_head"))
register_arch(ArchSpec("gptj", layers="transformer.h", mlp_out="mlp.fc_out", mlp_out_layout="out_in",
                       final_norm="transformer.ln_f", lm_head="lm_head"))
register_arch(ArchSpec("gpt_neox", layers="gpt_neox.layers", mlp_out="mlp.dense_4h_to_h", mlp_out_layout="out_in",
                       final_norm="gpt_neox.final_layer_norm", lm_head="lm_head"))
register_arch(ArchSpec("phi", layers="model.layers", mlp_out="mlp.fc2", mlp_out_layout="out_in",
                       final_norm="model.final_layernorm", lm_head="lm_head"))


def supported_model_types() -> list[str]:
    return sorted(_SPECS)


def get_spec(model: nn.Module) -> ArchSpec:
    """The spec for ``model.config.model_type``, checked against the actual module tree."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = _SPECS.get(model_type)  # type: ignore[arg-type]
    if spec is None:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}. "
            "Register a spec with anyedit.register_arch(ArchSpec(model_type=..., layers=..., mlp_out=..., "
            "mlp_out_layout='out_in'|'in_out', final_norm=..., lm_head=...))."
        )
    _validate(model, spec)
    return spec


def _validate(model: nn.Module, spec: ArchSpec) -> None:
    try:
        layers = model.get_submodule(spec.layers)
        w = model.get_submodule(spec.mlp_out_path(0)).weight
        model.get_submodule(spec.final_norm)
        model.get_submodule(spec.lm_head)
    except AttributeError as e:
        raise UnsupportedArchitectureError(
            f"the {spec.model_type!r} spec does not match this model's modules ({e}); "
            "register a corrected spec for it"
        ) from None
    hidden = hidden_size(model)
    out_dim = w.shape[0] if spec.mlp_out_layout == "out_in" else w.shape[1]
    if out_dim != hidden or not isinstance(layers, (nn.ModuleList, list, tuple)):
        raise UnsupportedArchitectureError(
            f"the {spec.model_type!r} spec declares {spec.mlp_out} with layout {spec.mlp_out_layout}, "
            f"but its weight has shape {tuple(w.shape)} for hidden size {hidden}"
        )


def hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)  # HF attribute_map covers n_embd


def num_layers(model: nn.Module, spec: ArchSpec | None = None) -> int:
    spec = spec or get_spec(model)
    return len(model.get_submodule(spec.layers))


def mlp_out_weight(model: nn.Module, spec: ArchSpec, layer: int) -> torch.Tensor:
    return model.get_submodule(spec.mlp_out_path(layer)).weight


def key_dim(model: nn.Module, spec: ArchSpec, layer: int) -> int:
    w = mlp_out_weight(model, spec, layer)
    return int(w.shape[1] if spec.mlp_out_layout == "out_in" else w.shape[0])


def default_layers(n_layers: int) -> tuple[int, ...]:
    """The paper's layers 4..8 of 32, scaled to depth (at least one layer)."""
    lo = max(0, round(4 * n_layers / 32))
    hi = max(lo, min(n_layers - 1, round(8 * n_layers / 32)))
    return tuple(range(lo, hi + 1))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_label(model: nn.Module) -> str:
    """Human size label such as '135M' or '8B' (for presets and messages)."""
    n = param_count(model)
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    return f"{max(1, math.floor(n / 1e6))}M"


_NAMES: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def set_model_name(model: nn.Module, name: str) -> None:
    """The name :func:`model_identity` reports for ``model`` (e.g. the embedded default model's, loaded from a
    cache directory whose path would otherwise be its name). Kept beside the model, never in its config, so it
    cannot end up in a saved ``config.json``."""
    _NAMES[model] = name


def model_identity(model: nn.Module) -> dict[str, object]:
    """What identifies a base model for caches and saved edits.

    The weight hash covers the token embedding (sampled on large models), which edits never touch,
    so an edited model keeps the identity of its base model.
    """
    import hashlib

    cfg = model.config
    emb = model.get_input_embeddings().weight.detach()
    flat = emb.reshape(-1)
    step = max(1, flat.numel() // 1_000_000)
    sample = flat[::step].float().cpu().contiguous()
    h = hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:20]
    return {
        "name_or_path": str(_NAMES.get(model) or getattr(cfg, "_name_or_path", "")),
        "model_type": str(cfg.model_type),
        "num_layers": int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)),
        "hidden_size": int(cfg.hidden_size),
        "embedding_sha256": h,
    }
