"""Measured settings per model family and size, stored as data in ``presets.json``.

Each entry names the models it fits (``model_type`` list and a parameter-count range), the method, and
the config values (as in :meth:`EditConfig.to_dict`) plus ``"measured_by"``: the command whose output
chose it. The first matching entry wins; with none, the reference's values with depth-scaled layers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from torch import nn

from ..config import EditConfig, backend_config_class
from ..model.arch import default_layers, num_layers, param_count


@lru_cache(maxsize=1)
def load_presets() -> list[dict[str, Any]]:
    text = resources.files("anyedit.editing").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)["presets"]


def _matches(entry: dict[str, Any], model_type: str, n_params: int, method: str | None) -> bool:
    m = entry.get("match", {})
    if method is not None and entry.get("method", "memit") != method:
        return False
    if "model_type" in m and model_type not in m["model_type"]:
        return False
    if n_params < float(m.get("min_params", 0)) or n_params >= float(m.get("max_params", float("inf"))):
        return False
    return True


def find_preset(model: nn.Module, method: str | None = None) -> dict[str, Any] | None:
    mt, n = str(model.config.model_type), param_count(model)
    for entry in load_presets():
        if _matches(entry, mt, n, method):
            return entry
    return None


def preset_config(model: nn.Module, method: str | None = None) -> EditConfig:
    """The config for this model (and method, default: the preset's best method)."""
    entry = find_preset(model, method)
    n = num_layers(model)
    if entry is None:
        method = method or "memit"
        no_chunks = not backend_config_class(method).uses_values
        cfg = EditConfig.from_dict({"method": method, **({"chunking": {"mode": "none"}} if no_chunks else {})})
    else:
        cfg = EditConfig.from_dict({"method": entry.get("method", "memit"), **entry.get("config", {})})
    if cfg.layers is None or any(i >= n for i in cfg.layers):
        layers = list(default_layers(n))
        if cfg.backend is not None and (cfg.backend.single_layer or not cfg.backend.uses_values):
            layers = layers[-1:]
        cfg = EditConfig.from_dict({**cfg.to_dict(), "layers": layers})
    return cfg


def preset_name(model: nn.Module, method: str | None = None) -> str:
    entry = find_preset(model, method)
    return entry["name"] if entry else "reference-defaults"
