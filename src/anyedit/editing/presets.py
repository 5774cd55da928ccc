"""Measured settings per model family and size, stored as data in ``presets.json``.

Each entry names the models it fits (``model_type`` list and a parameter-count range), the method, and
the config values (as in :meth:`EditConfig.to_dict`) plus ``"measured_by"``: the command whose output
chose it. The first matching entry wins; with none, the reference's values with depth-scaled layers.

An entry with ``"named_only": true`` is never picked on its own: it is an alternative asked for by name
(``preset_config(model, name=...)``, ``--preset NAME``), written as ``"based_on"`` another entry (whose method
and ``"match"`` it takes unless it has its own) plus the ``"overrides"`` (dotted config keys) that make it differ.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from torch import nn

from ..config import EditConfig, backend_config_class
from ..errors import ConfigError
from ..model.arch import default_layers, num_layers, param_count


@lru_cache(maxsize=1)
def load_presets() -> list[dict[str, Any]]:
    text = resources.files("anyedit.editing").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)["presets"]


def _inherited(entry: dict[str, Any], key: str, default: Any) -> Any:
    """A field of an entry; for a ``based_on`` entry without it, its base's."""
    if key in entry:
        return entry[key]
    return _inherited(_named(entry["based_on"]), key, default) if "based_on" in entry else default


def _matches(entry: dict[str, Any], model_type: str, n_params: int, method: str | None) -> bool:
    m = _inherited(entry, "match", {})
    if method is not None and _inherited(entry, "method", "memit") != method:
        return False
    if "model_type" in m and model_type not in m["model_type"]:
        return False
    if n_params < float(m.get("min_params", 0)) or n_params >= float(m.get("max_params", float("inf"))):
        return False
    return True


def _named(name: str) -> dict[str, Any]:
    entry = next((e for e in load_presets() if e["name"] == name), None)
    if entry is None:
        raise ConfigError(f"no preset named {name!r}; the presets are: {', '.join(e['name'] for e in load_presets())}")
    return entry


def _fitting(model: nn.Module, method: str | None) -> list[dict[str, Any]]:
    """The entries that fit ``model`` (and ``method``), in order."""
    mt, n = str(model.config.model_type), param_count(model)
    return [e for e in load_presets() if _matches(e, mt, n, method)]


def find_preset(model: nn.Module, method: str | None = None, name: str | None = None) -> dict[str, Any] | None:
    """The first entry that fits ``model`` (and ``method``) and is not named-only; or the entry ``name``, which
    must fit them."""
    if name is not None:
        entry = _named(name)
        if entry not in _fitting(model, method):
            raise ConfigError(f"preset {name!r} ({_inherited(entry, 'method', 'memit')}) does not fit this model "
                              f"({model.config.model_type}, {param_count(model):,} parameters)"
                              + (f" and method {method!r}" if method else ""))
        return entry
    return next((e for e in _fitting(model, method) if not e.get("named_only")), None)


def named_presets(model: nn.Module, method: str | None = None) -> list[str]:
    """The named-only presets that fit ``model`` (and ``method``): alternatives to its default."""
    return [e["name"] for e in _fitting(model, method) if e.get("named_only")]


def entry_config(entry: dict[str, Any]) -> EditConfig:
    """The config an entry stores: its method and config values, or its base's with its overrides."""
    if "based_on" in entry:
        return entry_config(_named(entry["based_on"])).with_overrides(entry.get("overrides", {}))
    return EditConfig.from_dict({"method": entry.get("method", "memit"), **entry.get("config", {})})


def preset_config(model: nn.Module, method: str | None = None, name: str | None = None) -> EditConfig:
    """The config for this model (and method, default: the preset's best method); ``name``: that preset's (a
    named-only alternative such as ``small-chat-unke-paraphrase``), which must fit the model."""
    entry = find_preset(model, method, name)
    n = num_layers(model)
    if entry is None:
        method = method or "memit"
        no_chunks = not backend_config_class(method).uses_values
        cfg = EditConfig.from_dict({"method": method, **({"chunking": {"mode": "none"}} if no_chunks else {})})
    else:
        cfg = entry_config(entry)
    if cfg.layers is None or any(i >= n for i in cfg.layers):
        layers = list(default_layers(n))
        if cfg.backend is not None and (cfg.backend.single_layer or not cfg.backend.uses_values):
            layers = layers[-1:]
        cfg = EditConfig.from_dict({**cfg.to_dict(), "layers": layers})
    return cfg


def preset_name(model: nn.Module, method: str | None = None, name: str | None = None) -> str:
    entry = find_preset(model, method, name)
    return entry["name"] if entry else "reference-defaults"
