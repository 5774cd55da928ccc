"""Linear algebra and tracing shared by the closed-form backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..arch import ArchSpec
from ..batching import pad_batch
from ..deltas import Delta
from ..hooks import capture, stop_after

log = logging.getLogger(__name__)


@dataclass
class Trace:
    """Per sequence: MLP keys at one layer ``[T, d_ff]`` and the hidden output of another ``[T, hidden]``."""

    keys: torch.Tensor
    outputs: torch.Tensor


def trace(model: nn.Module, spec: ArchSpec, sequences: Sequence[Sequence[int]], key_layer: int,
          out_layer: int, batch_size: int = 8) -> list[Trace]:
    """One forward per batch (right-padded) recording both tensors; stops after the higher layer. Runs in eval
    mode (no dropout), whatever mode the model was in, and leaves that mode as it was."""
    device = next(model.parameters()).device
    key_path, out_path = spec.mlp_out_path(key_layer), spec.layer_path(out_layer)
    stop = model.get_submodule(spec.layer_path(max(key_layer, out_layer)))
    result: list[Trace] = []
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(sequences), batch_size):
            batch = [list(s) for s in sequences[b: b + batch_size]]
            ids, mask = pad_batch(batch, device)
            with capture(model, inputs=[key_path], outputs=[out_path]) as rec, stop_after(stop):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            for i, s in enumerate(batch):
                result.append(Trace(rec.inputs[key_path][i, : len(s)].float(),
                                    rec.outputs[out_path][i, : len(s)].float()))
    finally:
        model.train(was_training)
    return result


def split_keys(traces: Sequence[Trace],
               anchors: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edited keys ``K_s [m, d_ff]``, the other keys of the same texts ``K_p [r, d_ff]``, outputs at anchors."""
    ks, kp, zs = [], [], []
    for tr, pos in zip(traces, anchors):
        idx = torch.tensor(list(pos), device=tr.keys.device)
        ks.append(tr.keys[idx])
        zs.append(tr.outputs[idx])
        other = torch.ones(tr.keys.shape[0], dtype=torch.bool, device=tr.keys.device)
        other[idx] = False
        kp.append(tr.keys[other])
    return torch.cat(ks), torch.cat(kp), torch.cat(zs)


def solve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The configured solve dtype, float32 where the device has no float64 (Apple GPUs)."""
    dtype = getattr(torch, name)
    return torch.float32 if device.type == "mps" and dtype == torch.float64 else dtype


def regularised_solve(cov: torch.Tensor, k_s: torch.Tensor, k_p: torch.Tensor | None, lam: float,
                      kp_weight: float, dtype: torch.dtype, chat_cov: torch.Tensor | None = None,
                      chat_weight: float = 0.0) -> torch.Tensor:
    """``(lam C + w_c C_chat + w_p K_p^T K_p + K_s^T K_s)^-1 K_s^T`` as ``[d_ff, m]`` (keys are rows here)."""
    dev = k_s.device
    a = lam * cov.to(dev, dtype) + k_s.T.to(dtype) @ k_s.to(dtype)
    if chat_cov is not None and chat_weight > 0:
        a = a + chat_weight * chat_cov.to(dev, dtype)
    if k_p is not None and kp_weight > 0 and k_p.shape[0]:
        kp = k_p.to(dtype)
        a = a + kp_weight * (kp.T @ kp)
    return torch.linalg.solve(a, k_s.T.to(dtype))


def mlp_out_delta(spec: ArchSpec, residual: torch.Tensor, solved: torch.Tensor) -> Delta:
    """The low-rank delta ``R^T V^T`` of an MLP output weight, in the weight's declared layout.

    ``residual`` is ``[m, hidden]``, ``solved`` is ``[d_ff, m]``.
    """
    r_t = residual.T.to(solved.dtype).contiguous()  # [hidden, m]
    if spec.mlp_out_layout == "out_in":  # nn.Linear weight [hidden, d_ff]
        return Delta(a=r_t, b=solved.contiguous())
    return Delta(a=solved.contiguous(), b=r_t)  # Conv1D weight [d_ff, hidden]
