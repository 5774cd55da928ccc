"""Reading the model's next-token logits: how safely a text is the model's greedy continuation."""

from __future__ import annotations

import torch


@torch.no_grad()
def argmax_margin(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The smallest, over positions, margin of the label's logit over the best other logit (= the log-probability
    margin over the runner-up); positive when every label is the argmax, i.e. when greedy decoding, fed the labels
    before it, produces every label."""
    logits = logits.float()
    target = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return float((target - other).min())
