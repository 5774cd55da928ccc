"""Forward hooks, only as context managers that remove themselves.

Decoder layers return a tensor in recent transformers and a tuple whose first element is the hidden
state in older ones; :func:`hidden_of` / :func:`with_hidden` are the one place that knows this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor inside a module's output (tensor or tuple/list whose item 0 is it)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find a hidden-state tensor in a module output of type {type(output).__name__}")


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor replaced by ``hidden`` (same structure)."""
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    raise TypeError(f"cannot replace the hidden state in a module output of type {type(output).__name__}")


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise TypeError("cannot find the input tensor of a module call")


class Recording:
    """Tensors captured by :func:`capture`, by module path (the last call wins)."""

    def __init__(self) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}


@contextlib.contextmanager
def capture(model: nn.Module, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
            detach: bool = True) -> Iterator[Recording]:
    """Record the first input of the modules in ``inputs`` and the hidden output of those in ``outputs``."""
    rec = Recording()
    handles = []
    try:
        for path in inputs:
            def pre(_m: nn.Module, args: tuple, kwargs: dict, _p: str = path) -> None:
                t = _first_input(args, kwargs)
                rec.inputs[_p] = t.detach() if detach else t
            handles.append(model.get_submodule(path).register_forward_pre_hook(pre, with_kwargs=True))
        for path in outputs:
            def post(_m: nn.Module, _a: tuple, out: Any, _p: str = path) -> None:
                t = hidden_of(out)
                rec.outputs[_p] = t.detach() if detach else t
            handles.append(model.get_submodule(path).register_forward_hook(post))
        yield rec
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def add_to_output(module: nn.Module, rows: Sequence[int], cols: Sequence[int],
                  vectors: torch.Tensor) -> Iterator[None]:
    """Add ``vectors[i]`` to the hidden output of ``module`` at ``[rows[i], cols[i]]`` (differentiable).

    Positions beyond the current call's sequence length are ignored (incremental decoding).
    """
    if len(rows) != len(cols) or len(cols) != vectors.shape[0]:
        raise ValueError("rows, cols and vectors must have the same length")

    def hook(_m: nn.Module, _a: tuple, out: Any) -> Any:
        h = hidden_of(out)
        keep = [i for i, c in enumerate(cols) if c < h.shape[1] and rows[i] < h.shape[0]]
        if not keep:
            return None
        r = torch.tensor([rows[i] for i in keep], device=h.device)
        c = torch.tensor([cols[i] for i in keep], device=h.device)
        v = vectors[keep].to(h.dtype)
        h = h.index_put((r, c), v, accumulate=True)
        return with_hidden(out, h)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _StopForward(Exception):
    pass


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """Abort the forward pass right after ``module`` (saves the layers above it). Swallows the abort."""

    def hook(_m: nn.Module, _a: tuple, _o: Any) -> None:
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    except _StopForward:
        pass
    finally:
        handle.remove()


@contextlib.contextmanager
def replaced_modules(model: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[None]:
    """Temporarily swap submodules (by dotted path); the originals are always put back."""
    originals: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for path, new in replacements.items():
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            if name.isdigit():
                originals.append((parent, name, parent[int(name)]))
                parent[int(name)] = new
            else:
                originals.append((parent, name, getattr(parent, name)))
                setattr(parent, name, new)
        yield
    finally:
        for parent, name, old in reversed(originals):
            if name.isdigit():
                parent[int(name)] = old
            else:
                setattr(parent, name, old)


@contextlib.contextmanager
def replayed_layers(layers: nn.ModuleList, upto: int, h: torch.Tensor) -> Iterator[None]:
    """Make ``layers[0..upto]`` skip their computation: those below ``upto`` pass their input through and
    ``layers[upto]`` returns the stored output ``h``. The model's own forward still builds the masks and
    position embeddings for the layers above; the layers keep their attributes (attention type, index)."""
    saved: list[tuple[nn.Module, Any]] = []  # (layer, its own instance-level forward, e.g. accelerate's, or None)

    def passthrough(*args: Any, **kwargs: Any) -> Any:
        return args[0] if args else kwargs["hidden_states"]

    def replay(*args: Any, **kwargs: Any) -> Any:
        return h

    try:
        for i in range(upto + 1):
            saved.append((layers[i], layers[i].__dict__.get("forward")))
            layers[i].forward = replay if i == upto else passthrough  # instance attribute shadows the method
        yield
    finally:
        for m, own in saved:
            if own is None:
                del m.forward
            else:
                m.forward = own


def no_hooks_left(model: nn.Module) -> bool:
    """True when no module of ``model`` carries a forward (pre-)hook (used by the test suite)."""
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
