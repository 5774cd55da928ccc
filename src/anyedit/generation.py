"""Greedy answers with an explicit generation config (nothing inherited silently from the model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import PromptConfig
from .prompts import encode_prompt, end_token_id


def generation_config(tokenizer: Any, prompt: PromptConfig, max_new_tokens: int, *, sample: bool = False,
                      temperature: float = 1.0) -> Any:
    """Greedy (or sampled) decoding that stops at the end-of-turn or EOS token; no repetition penalty,
    no top-k/top-p unless sampling."""
    from transformers import GenerationConfig

    stops = sorted({t for t in (end_token_id(tokenizer, prompt), tokenizer.eos_token_id) if t is not None})
    kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, repetition_penalty=1.0,
                              eos_token_id=stops or None, pad_token_id=tokenizer.pad_token_id
                              if tokenizer.pad_token_id is not None else (stops[0] if stops else 0))
    if sample:
        kw.update(temperature=temperature, top_k=0, top_p=1.0)
    else:
        kw.update(temperature=None, top_k=None, top_p=None)
    return GenerationConfig(**kw)


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, questions: str | Sequence[str], prompt: PromptConfig | None = None,
             max_new_tokens: int = 256, batch_size: int = 8, sample: bool = False,
             temperature: float = 1.0) -> list[str]:
    """Answer each question (left-padded batches); returns the decoded answers without special tokens."""
    prompt = prompt or PromptConfig()
    if isinstance(questions, str):
        questions = [questions]
    gen_cfg = generation_config(tokenizer, prompt, max_new_tokens, sample=sample, temperature=temperature)
    device = next(model.parameters()).device
    answers: list[str] = []
    for b in range(0, len(questions), batch_size):
        encoded = [encode_prompt(tokenizer, q, prompt)[0] for q in questions[b: b + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), gen_cfg.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, width - len(e):] = torch.tensor(e, device=device)
            mask[i, width - len(e):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        for row in out[:, width:]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True))
    return answers
