"""Tracing a forward: the MLP keys of one layer and the hidden output of another, per sequence (the keys an
update writes at, the outputs it moves)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .arch import ArchSpec
from .batching import pad_batch
from .hooks import capture, stop_after
from .state import eval_mode, input_device


@dataclass
class Trace:
    """Per sequence: MLP keys at one layer ``[T, d_ff]`` and the hidden output of another ``[T, hidden]``."""

    keys: torch.Tensor
    outputs: torch.Tensor


def trace(model: nn.Module, spec: ArchSpec, sequences: Sequence[Sequence[int]], key_layer: int,
          out_layer: int, batch_size: int = 8) -> list[Trace]:
    """One forward per batch (right-padded) recording both tensors; stops after the higher layer. Runs in eval
    mode (no dropout), whatever mode the model was in, and leaves that mode as it was."""
    device = input_device(model)
    key_path, out_path = spec.mlp_out_path(key_layer), spec.layer_path(out_layer)
    stop = model.get_submodule(spec.layer_path(max(key_layer, out_layer)))
    result: list[Trace] = []
    with eval_mode(model):
        for b in range(0, len(sequences), batch_size):
            batch = [list(s) for s in sequences[b: b + batch_size]]
            ids, mask = pad_batch(batch, device)
            with capture(model, inputs=[key_path], outputs=[out_path]) as rec, stop_after(stop):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            for i, s in enumerate(batch):
                result.append(Trace(rec.inputs[key_path][i, : len(s)].float(),
                                    rec.outputs[out_path][i, : len(s)].float()))
    return result
