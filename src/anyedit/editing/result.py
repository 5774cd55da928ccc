"""The outcome of an edit: per-parameter deltas (exact low-rank factors) plus everything needed to
reproduce, verify, apply, revert, save and load it.

Saved as a directory: ``deltas.safetensors`` (factors ``<param>.a`` / ``<param>.b`` or ``<param>.dense``)
and ``edit.json`` (format version, library version, base-model identity, SHA-256 of every touched
weight before the edit, config, requests, per-chunk reports, timings), and ``history.safetensors``, the edit's
share of an :class:`~anyedit.editing.history.EditHistory` (its keys and texts, for later sequential edits). Never
pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save_file
from torch import nn

from .. import _io
from .._io import replacing
from .._version import __version__
from ..config import EditConfig
from ..errors import EditApplyError, EditFormatError, FingerprintMismatchError
from ..model.arch import model_identity
from ..model.weights import Delta, apply_deltas, get_param, restore, tensor_sha256
from ..types import EditRequest
from .history import EditHistory

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "edit.json"
TENSORS = "deltas.safetensors"
HISTORY = "history.safetensors"


@dataclass
class EditResult:
    deltas: dict[str, Delta]
    config: EditConfig
    requests: list[EditRequest]
    base_model: dict[str, Any]
    original_sha256: dict[str, str]
    reports: list[list[dict[str, Any]]] = field(default_factory=list)  # per request, per chunk
    timings: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    history: EditHistory | None = None  # this edit's share for later sequential edits (keys, texts)
    _backups: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ apply / revert

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model that is not this edit's base model (identity and touched weights)."""
        diff = identity_differences(self.base_model, model_identity(model))
        if diff:
            mine = self.base_model
            raise FingerprintMismatchError(
                f"this edit was made for {mine.get('name_or_path')!r} "
                f"({', '.join(f'{k}={mine.get(k)}' for k in diff)}); the model differs in {', '.join(diff)}"
            )
        for name, sha in self.original_sha256.items():
            if tensor_sha256(get_param(model, name)) != sha:
                raise FingerprintMismatchError(
                    f"weight {name} is not the one this edit was computed on (already edited, or another model)"
                )

    def apply(self, model: nn.Module, verify: bool = True) -> nn.Module:
        """Write the deltas into ``model`` (all or nothing). ``verify`` checks it is the right base model."""
        if id(model) in self._backups:
            raise EditApplyError("this edit is already applied to this model; revert it first")
        if verify:
            self.check_model(model)
        self._backups[id(model)] = apply_deltas(model, self.deltas)
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        """Restore the exact original weights (bit for bit)."""
        backup = self._backups.pop(id(model), None)
        if backup is None:
            raise EditApplyError("this edit is not applied to this model")
        restore(model, backup)
        return model

    @contextlib.contextmanager
    def applied(self, model: nn.Module, verify: bool = True) -> Iterator[nn.Module]:
        """``with result.applied(model): ...`` applies the edit for the block and always reverts it."""
        self.apply(model, verify=verify)
        try:
            yield model
        finally:
            self.revert(model)

    # ------------------------------------------------------------ persistence

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "anyedit_version": __version__,
            "base_model": self.base_model,
            "touched": {n: {"sha256": s, "shape": list(self.deltas[n].shape), "rank": self.deltas[n].rank}
                        for n, s in self.original_sha256.items()},
            "config": self.config.to_dict(),
            "requests": [r.to_dict() for r in self.requests],
            "reports": self.reports,
            "timings": self.timings,
            "diagnostics": self.diagnostics,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``edit.json`` and ``deltas.safetensors`` into ``directory`` (created if needed).

        Each file is written whole under a temporary name and renamed; the manifest, renamed last, holds the
        SHA-256 of the tensor file, so an edit overwritten half-way (a crash between the two renames) is
        refused on load rather than read as a mix of two edits."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise EditFormatError(f"cannot save the edit to {d}: it is a file, not a directory")
        tensors = {f"{n}.{k}": t.detach().contiguous().cpu() for n, delta in self.deltas.items()
                   for k, t in delta.tensors().items()}
        extra: dict[str, str] = {}
        if self.history is not None:
            with replacing(d / HISTORY) as tmp:
                self.history.save(tmp)
                extra["history_sha256"] = _sha256(tmp.read_bytes())
        with replacing(d / TENSORS) as tmp:
            save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
            manifest = json.dumps({**self.manifest(), "tensors_sha256": _sha256(tmp.read_bytes()), **extra},
                                  indent=2, default=float)  # one that cannot be written stops before any change
        _io.write_text(d / MANIFEST, manifest)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> EditResult:
        """Load an edit saved with :meth:`EditResult.save`; a missing or corrupt file is a clear error."""
        d = Path(directory)
        if not d.is_dir():
            raise EditFormatError(f"edit directory not found: {d}")
        for f in (MANIFEST, TENSORS):
            if not (d / f).is_file():
                raise EditFormatError(f"{d} is not a saved edit: {f} is missing")
        try:
            man = json.loads((d / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EditFormatError(f"{d / MANIFEST} is not valid JSON ({e})") from None
        if not isinstance(man, dict) or man.get("format_version") != FORMAT_VERSION:
            raise EditFormatError(f"{d / MANIFEST}: unsupported or missing format_version (expected {FORMAT_VERSION})")
        data = (d / TENSORS).read_bytes()  # read once: hashed and loaded from the same bytes
        if "tensors_sha256" in man and man["tensors_sha256"] != _sha256(data):
            raise EditFormatError(f"{d / TENSORS} is not the file {d / MANIFEST} was saved with (its SHA-256 differs); "
                                  "the edit was overwritten half-way or the files were mixed")
        try:
            tensors = load(data)
        except Exception as e:  # noqa: BLE001 - safetensors raises several types on corrupt files
            raise EditFormatError(f"{d / TENSORS} is corrupt ({e})") from None
        history = None
        if "history_sha256" in man:
            if not (d / HISTORY).is_file() or man["history_sha256"] != _sha256((d / HISTORY).read_bytes()):
                raise EditFormatError(f"{d / HISTORY} is missing or not the file {d / MANIFEST} was saved with")
            history = EditHistory.load(d / HISTORY)
        try:
            deltas: dict[str, Delta] = {}
            for name in man["touched"]:
                if f"{name}.dense" in tensors:
                    deltas[name] = Delta(dense=tensors[f"{name}.dense"])
                else:
                    deltas[name] = Delta(a=tensors[f"{name}.a"], b=tensors[f"{name}.b"])
                if list(deltas[name].shape) != man["touched"][name]["shape"]:
                    raise EditFormatError(f"{d}: delta {name} has shape {deltas[name].shape}, manifest says "
                                          f"{man['touched'][name]['shape']}")
            return cls(
                deltas=deltas,
                config=EditConfig.from_dict(man["config"]),
                requests=[EditRequest.from_dict(r) for r in man["requests"]],
                base_model=man["base_model"],
                original_sha256={n: v["sha256"] for n, v in man["touched"].items()},
                reports=man.get("reports", []),
                timings=man.get("timings", {}),
                diagnostics=man.get("diagnostics", {}),
                history=history,
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, EditFormatError):
                raise
            raise EditFormatError(f"{d}: the manifest and tensors do not match ({type(e).__name__}: {e})") from None


def identity_differences(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The fields in which two model identities (:func:`model_identity`) differ; the name or path does not count."""
    keys = [*base, *sorted(set(other) - set(base))]
    return [k for k in keys if k != "name_or_path" and base.get(k) != other.get(k)]


def load_edits(directory: str | Path) -> EditResult:
    """:meth:`EditResult.load` (kept under this name for the documented API)."""
    return EditResult.load(directory)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
