"""What an edit is told to keep: the MLP keys of generic chat conversations.

The covariance statistics come from plain text (Wikipedia). A chat model is used through its template,
and the template's tokens (and the start of every answer) have keys that the text statistics barely
cover, so an update that is cheap under the text statistics can rewrite the start of every answer.
This module builds a second statistic over conversations in the deployment format: each built-in
preservation prompt (``data/chat_prompts.json``, ``"preserve"``; disjoint from the ``"probe"`` prompts
used to measure locality) in the model's chat template, followed by the model's own greedy answer.
The answers are generated once per model and cached with the statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from .. import _io
from .._io import read_records
from ..config import PreserveConfig, PromptConfig
from ..errors import CorpusError
from ..model.arch import model_identity
from ..model.generation import generate_ids
from ..model.prompts import encode_prompt, end_token_id
from ..model.weights import edits_applied
from .covariance import RowSource

log = logging.getLogger(__name__)


def builtin_prompts(kind: str = "preserve") -> list[str]:
    data = json.loads(resources.files("anyedit").joinpath("data/chat_prompts.json").read_text(encoding="utf-8"))
    return list(data[kind])


def load_prompts(source: str) -> list[str]:
    """``"builtin"`` or a file: JSON or JSONL of questions (strings or objects with ``question``), or text (one
    per line)."""
    if source == "builtin":
        return builtin_prompts("preserve")
    p = Path(source).expanduser()
    if p.suffix in (".json", ".jsonl"):
        records = read_records(p, "preservation prompts file", CorpusError)
        try:
            out = [d if isinstance(d, str) else d["question"] for d in records]
        except (KeyError, TypeError) as e:
            raise CorpusError(f"{source}: expected questions (strings, or objects with 'question'): {e}") from None
    elif p.is_file():
        out = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise CorpusError(f"preservation prompts file not found: {source}")
    if not out:
        raise CorpusError(f"{source}: no prompts")
    return out


def preserve_prompt_ids(tokenizer: Any, cfg: PreserveConfig, prompt_cfg: PromptConfig) -> list[list[int]]:
    """The preservation prompts as the model sees them (chat template, no answer): token ids."""
    return [encode_prompt(tokenizer, q, prompt_cfg)[0] for q in load_prompts(cfg.prompts)[: cfg.n_prompts]]


def chat_source(model: nn.Module, tokenizer: Any, cfg: PreserveConfig, prompt_cfg: PromptConfig,
                cache_dir: Path | None, dtype: str = "float32") -> RowSource:
    """One row per conversation: templated prompt + the model's own greedy answer (cached on disk)."""
    prompts = load_prompts(cfg.prompts)[: cfg.n_prompts]
    encoded = preserve_prompt_ids(tokenizer, cfg, prompt_cfg)
    ident = {"kind": "chat-conversations", "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16],
             "n_prompts": len(prompts), "answer_tokens": cfg.answer_tokens, "prompt": prompt_cfg.to_dict(),
             "dtype": dtype}
    answers_path = None
    if cache_dir is not None:
        key = json.dumps({"model": model_identity(model), **ident}, sort_keys=True)
        answers_path = Path(cache_dir) / "preserve" / f"answers-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    state: dict[str, list[list[int]]] = {}

    def answers() -> list[list[int]]:
        if "a" in state:
            return state["a"]
        if answers_path is not None and answers_path.is_file():
            try:
                cached = json.loads(answers_path.read_text())
                if isinstance(cached, list) and len(cached) == len(prompts):
                    state["a"] = cached
                else:
                    log.warning("%s does not hold %d answers; generating them again", answers_path, len(prompts))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s is unreadable; generating the answers again", answers_path)
        if "a" not in state:
            log.info("generating the model's own answers to %d preservation prompts (once per model)", len(prompts))
            state["a"] = generate_ids(model, tokenizer, encoded, prompt_cfg, cfg.answer_tokens, batch_size=16)
            if answers_path is not None and not edits_applied(model):  # cached under the base model's identity
                _io.write_text(answers_path, json.dumps(state["a"]))
        return state["a"]

    eot = end_token_id(tokenizer, prompt_cfg)

    def rows() -> Iterator[list[int]]:
        for p, a in zip(encoded, answers()):
            if eot is not None and (not a or a[-1] != eot):
                a = [*a, eot]
            yield p + a

    total = sum(len(p) for p in encoded) + len(prompts) * (cfg.answer_tokens + (eot is not None))
    return RowSource(ident, rows, total, dtype, batch_size=8, description="chat preservation statistics",
                     n_tokens_is_bound=True)  # an answer may end before answer_tokens
