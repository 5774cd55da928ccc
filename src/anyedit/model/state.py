"""The model's mutable state, only through context managers that put it back: eval mode, frozen parameters, and
"train these parameters, then restore them" (the scaffold of the trained backends). And where inputs go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def input_device(model: nn.Module) -> torch.device:
    """The device input ids must be on: that of the input embeddings (right under ``device_map``, where the first
    parameter may live on another device)."""
    return model.get_input_embeddings().weight.device


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The block runs in eval mode (no dropout), whatever mode the model was in; that mode is put back after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the block; restores the previous flags."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@contextlib.contextmanager
def training(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[list[torch.Tensor]]:
    """Train ``params`` (and nothing else) in the block: eval mode (no dropout), ``requires_grad`` only on them.
    Yields exact copies of their values before the block; afterwards the values, every parameter's
    ``requires_grad`` flag and the model's mode are put back as they were, whatever happened in the block."""
    with torch.no_grad():
        original = [p.detach().clone() for p in params]
    with eval_mode(model), frozen(model):
        try:
            for p in params:
                p.requires_grad_(True)
            yield original
        finally:
            with torch.no_grad():
                for p, p0 in zip(params, original):
                    p.copy_(p0)
