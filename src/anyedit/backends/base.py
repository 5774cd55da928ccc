"""The backend protocol and registry: a backend turns (keys, target values, statistics) into deltas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..config import BackendConfig, EditConfig, get_method, register_method
from ..model.arch import ArchSpec
from ..model.weights import Delta
from ..types import Chunk, PreparedRequest, ValueTargets, edited_from


@dataclass
class EditContext:
    """Everything a backend may use, computed lazily on first call: ``stats(layers)`` the text covariance
    statistics, ``chat_stats(layers)`` the same over the preservation conversations, ``preserve_rows()`` the
    token ids of those conversations (prompt + the model's own answer)."""

    model: nn.Module
    tokenizer: Any
    spec: ArchSpec
    config: EditConfig
    layers: tuple[int, ...]
    value_layer: int
    prepared: list[PreparedRequest]
    chunks: list[list[Chunk]]
    values: list[ValueTargets]
    stats: Callable[[Sequence[int]], dict[int, torch.Tensor]]
    chat_stats: Callable[[Sequence[int]], dict[int, torch.Tensor]] | None = None
    preserve_rows: Callable[[], list[list[int]]] | None = None
    null_basis: Callable[..., dict[int, torch.Tensor]] | None = None
    history: Any = None
    show_progress: bool = True

    @property
    def backend_config(self) -> Any:
        return self.config.backend

    @property
    def answer_starts(self) -> list[int]:
        """Per text, where the part of the answer it edits begins (:func:`~anyedit.types.edited_from`)."""
        return [edited_from(p, c) for p, c in zip(self.prepared, self.chunks)]


@dataclass
class BackendOutput:
    """``edited_keys``: per layer, the MLP keys ``[m, d_ff]`` the update was written at (for EditHistory)."""

    deltas: dict[str, Delta]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    edited_keys: dict[int, torch.Tensor] = field(default_factory=dict)


class Backend(Protocol):
    """``compute`` returns deltas and must leave the model's weights exactly as it found them."""

    def compute(self, ctx: EditContext) -> BackendOutput: ...


def register_backend(name: str, backend_cls: type, config_cls: type[BackendConfig]) -> None:
    """Register a method under ``name`` (unique) with its backend and config classes (the one registry,
    :func:`anyedit.config.register_method`)."""
    register_method(name, backend_cls, config_cls)


def get_backend(name: str) -> Backend:
    """A new backend of method ``name`` (an unknown name is one ConfigError listing the known methods)."""
    return get_method(name).backend()
