"""Reading the model's next-token logits: how safely a text is the model's greedy continuation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .state import eval_mode, input_device


@torch.no_grad()
def argmax_margin(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The smallest, over positions, margin of the label's logit over the best other logit (= the log-probability
    margin over the runner-up); positive when every label is the argmax, i.e. when greedy decoding, fed the labels
    before it, produces every label."""
    logits = logits.float()
    target = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return float((target - other).min())


@torch.no_grad()
def answer_margins(model: torch.nn.Module, rows: Sequence[Sequence[int]], starts: Sequence[int]) -> list[float]:
    """Per text (token ids of prompt + answer), the :func:`argmax_margin` of its answer tokens (from ``starts[i]``)
    under the model's own forward, in eval mode: positive when greedy decoding from the prompt returns the answer.
    One text at a time (no padding to get right for any architecture)."""
    device = input_device(model)
    out = []
    with eval_mode(model):
        for row, s in zip(rows, starts):
            if not 0 < s < len(row):
                raise ValueError(f"an answer must start inside its text (start {s}, length {len(row)})")
            ids = torch.tensor([list(row)], dtype=torch.long, device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0]
            out.append(argmax_margin(logits[s - 1: len(row) - 1], ids[0, s:].to(logits.device)))
    return out
