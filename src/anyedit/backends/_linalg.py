"""Linear algebra shared by the closed-form backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..model.arch import ArchSpec
from ..model.trace import Trace
from ..model.weights import Delta

log = logging.getLogger(__name__)


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
                      kp_weight: float, dtype: torch.dtype,
                      extra: Sequence[tuple[float, torch.Tensor | None]] = ()) -> torch.Tensor:
    """``(lam C + sum_i w_i M_i + w_p K_p^T K_p + K_s^T K_s)^-1 K_s^T`` as ``[d_ff, m]`` (keys are rows here);
    ``extra`` holds the further weighted ``[d_ff, d_ff]`` terms ``(w_i, M_i)`` (chat statistics, earlier edits'
    keys), skipped where the matrix is None or the weight 0."""
    dev = k_s.device
    a = lam * cov.to(dev, dtype) + k_s.T.to(dtype) @ k_s.to(dtype)
    for w, m in extra:
        if m is not None and w > 0:
            a = a + w * m.to(dev, dtype)
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
