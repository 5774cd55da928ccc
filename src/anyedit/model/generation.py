"""Greedy answers with an explicit generation config (nothing inherited silently from the model).

transformers fills every field a ``GenerationConfig`` leaves unset from the model's own
``generation_config`` (a checkpoint's sampling, top-p, repetition penalty, beams, suppressed tokens, ...).
:func:`generate` swaps in a blank one for the call, so only what :func:`generation_config` sets and
transformers' global defaults apply, whatever the checkpoint ships.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..config import PromptConfig
from .batching import pad_batch
from .prompts import encode_prompt, end_token_id
from .state import input_device


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


@contextlib.contextmanager
def without_model_defaults(model: nn.Module) -> Iterator[None]:
    """The model's ``generation_config`` replaced by a blank one while the block runs (then put back)."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The block runs with torch's global random state seeded to ``seed`` (CPU and every visible CUDA device,
    which HF sampling draws from); the state from before is put back afterwards, so the caller's own random
    sequence is not disturbed."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_ids(model: nn.Module, tokenizer: Any, encoded: Sequence[Sequence[int]], prompt: PromptConfig,
                 max_new_tokens: int, batch_size: int = 8, sample: bool = False,
                 temperature: float = 1.0) -> list[list[int]]:
    """The answer token IDs to each encoded prompt (left-padded batches of ``batch_size``), up to and including
    the first stop token (end of turn or EOS)."""
    gen_cfg = generation_config(tokenizer, prompt, max_new_tokens, sample=sample, temperature=temperature)
    stops = set(gen_cfg.eos_token_id or [])
    device = input_device(model)
    out: list[list[int]] = []
    for b in range(0, len(encoded), batch_size):
        batch = encoded[b: b + batch_size]
        ids, mask = pad_batch(batch, device, gen_cfg.pad_token_id, left=True)
        width = ids.shape[1]
        with without_model_defaults(model):
            res = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        for row in res[:, width:].tolist():
            ans: list[int] = []
            for t in row:
                ans.append(t)
                if t in stops:
                    break
            out.append(ans)
    return out


def generate(model: nn.Module, tokenizer: Any, questions: str | Sequence[str], prompt: PromptConfig | None = None,
             max_new_tokens: int = 256, batch_size: int = 8, sample: bool = False,
             temperature: float = 1.0) -> list[str]:
    """Answer each question (left-padded batches); returns the decoded answers without special tokens."""
    prompt = prompt or PromptConfig()
    if isinstance(questions, str):
        questions = [questions]
    encoded = [encode_prompt(tokenizer, q, prompt)[0] for q in questions]
    ids = generate_ids(model, tokenizer, encoded, prompt, max_new_tokens, batch_size, sample, temperature)
    return [tokenizer.decode(a, skip_special_tokens=True) for a in ids]
