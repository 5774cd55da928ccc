"""Weight deltas and the primitives that apply and undo them exactly."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EditApplyError


@dataclass
class Delta:
    """A change to one parameter: ``param += a @ b.T`` (low rank), or ``param += dense``.

    ``a`` has the parameter's first dimension, ``b`` its second, so the layout is already resolved.
    Factors are kept in float32 (or better); the sum is cast to the parameter's dtype when applied.
    """

    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    dense: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.dense is None) == (self.a is None or self.b is None):
            raise ValueError("a Delta is either low-rank (a and b) or dense")
        if self.dense is None and (self.a.ndim != 2 or self.b.ndim != 2 or self.a.shape[1] != self.b.shape[1]):
            raise ValueError(f"low-rank factors must be [m, r] and [n, r], got {tuple(self.a.shape)} and "
                             f"{tuple(self.b.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        if self.dense is not None:
            return tuple(self.dense.shape)  # type: ignore[return-value]
        return (self.a.shape[0], self.b.shape[0])  # type: ignore[union-attr]

    @property
    def rank(self) -> int | None:
        return None if self.dense is not None else int(self.a.shape[1])  # type: ignore[union-attr]

    def full(self, device: torch.device | None = None) -> torch.Tensor:
        if self.dense is not None:
            return self.dense.to(device) if device is not None else self.dense
        a, b = self.a, self.b
        if device is not None:
            a, b = a.to(device), b.to(device)  # type: ignore[union-attr]
        return a @ b.T  # type: ignore[union-attr]

    def is_finite(self) -> bool:
        ts = [self.dense] if self.dense is not None else [self.a, self.b]
        return all(bool(torch.isfinite(t).all()) for t in ts)  # type: ignore[arg-type]

    def merged(self, other: "Delta") -> "Delta":
        """The sum of two deltas of the same parameter (low-rank factors are concatenated: exact)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot add deltas of shapes {self.shape} and {other.shape}")
        if self.dense is None and other.dense is None:
            return Delta(a=torch.cat([self.a, other.a.to(self.a.dtype)], 1),  # type: ignore[list-item]
                         b=torch.cat([self.b, other.b.to(self.b.dtype)], 1))  # type: ignore[list-item]
        return Delta(dense=self.full() + other.full().to(self.full().dtype))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"dense": self.dense} if self.dense is not None else {"a": self.a, "b": self.b}  # type: ignore[dict-item]


def add_deltas(into: dict[str, Delta], deltas: dict[str, Delta]) -> None:
    """Add ``deltas`` to ``into`` in place, parameter by parameter (:meth:`Delta.merged`)."""
    for name, d in deltas.items():
        into[name] = into[name].merged(d) if name in into else d


def get_param(model: nn.Module, name: str) -> torch.nn.Parameter:
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise EditApplyError(f"the model has no parameter {name!r}") from None


def new_values(model: nn.Module, deltas: dict[str, Delta]) -> dict[str, torch.Tensor]:
    """Compute ``param + delta`` for every delta without touching the model; refuse non-finite results."""
    out: dict[str, torch.Tensor] = {}
    for name, d in deltas.items():
        p = get_param(model, name)
        if tuple(p.shape) != d.shape:
            raise EditApplyError(f"delta for {name} has shape {d.shape}, parameter has {tuple(p.shape)}")
        if not d.is_finite():
            raise EditApplyError(f"the delta for {name} contains NaN or Inf; nothing was changed")
        full = d.full(p.device)
        v = (p.detach().to(full.dtype) + full).to(p.dtype)
        if not bool(torch.isfinite(v).all()):
            raise EditApplyError(f"applying the delta to {name} gives NaN or Inf; nothing was changed")
        out[name] = v
    return out


_APPLIED: "weakref.WeakKeyDictionary[nn.Module, set[int]]" = weakref.WeakKeyDictionary()


def edit_state(model: nn.Module) -> frozenset[int]:
    """The backups :func:`apply_deltas` handed out for ``model`` and :func:`restore` has not taken back yet
    (empty: the model's own weights). Caches keyed by the base model's identity (statistics, the model's own
    answers) must not store what an edited model computes."""
    return frozenset(_APPLIED.get(model, ()))


def edits_applied(model: nn.Module) -> int:
    """How many :func:`apply_deltas` are in force on ``model``."""
    return len(_APPLIED.get(model, ()))


@torch.no_grad()
def apply_deltas(model: nn.Module, deltas: dict[str, Delta]) -> dict[str, torch.Tensor]:
    """Apply all deltas (all or nothing) and return exact copies of the original values."""
    values = new_values(model, deltas)
    backup = {name: get_param(model, name).detach().clone() for name in values}
    for name, v in values.items():
        get_param(model, name).copy_(v)
    if backup:
        _APPLIED.setdefault(model, set()).add(id(backup))
    return backup


@torch.no_grad()
def restore(model: nn.Module, backup: dict[str, torch.Tensor]) -> None:
    """Undo one :func:`apply_deltas` with the copies it returned (restoring the same backup twice writes the
    same values again and counts once)."""
    for name, v in backup.items():
        get_param(model, name).copy_(v)
    _APPLIED.get(model, set()).discard(id(backup))


@contextmanager
def undone(model: nn.Module, deltas: dict[str, Delta]) -> Iterator[nn.Module]:
    """``with undone(model, deltas):`` the model without ``deltas`` (each subtracted) for the block; its weights
    are put back exactly afterwards."""
    backup = apply_deltas(model, {n: Delta(dense=-d.full()) for n, d in deltas.items()})
    try:
        yield model
    finally:
        restore(model, backup)


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def relative_change(model: nn.Module, deltas: dict[str, Delta]) -> float:
    """``||sum of the changes||_F / ||the changed weights before||_F`` over the matrices ``deltas`` changes (as
    applied to ``model`` now: the weights before are the current ones minus the change). How far an edit, or a
    stack of them, moved the weights it touched."""
    change = before = 0.0
    for name, d in deltas.items():
        p = get_param(model, name)
        if p.ndim < 2:
            continue
        full = d.full(p.device).float()
        change += full.pow(2).sum().item()
        before += (p.float() - full).pow(2).sum().item()
    return (change / before) ** 0.5 if before else 0.0
