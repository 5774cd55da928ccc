"""Greedy generation is an explicit argmax loop, whatever generation defaults the checkpoint ships."""

from __future__ import annotations

import torch

from anyedit.config import PromptConfig
from anyedit.model.generation import generate, generate_ids, generation_config
from anyedit.model.prompts import encode_prompt


def _argmax_loop(model, ids, n, stops):
    seq, ans = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            ans.append(t)
            seq.append(t)
            if t in stops:
                break
    return ans


def test_greedy_ignores_the_checkpoints_generation_defaults(llama):
    model, tok = llama
    prompt = PromptConfig()
    qs = ["What colour is the fox?", "Name a prime number."]
    encoded = [encode_prompt(tok, q, prompt)[0] for q in qs]
    cfg = generation_config(tok, prompt, 10)
    expected = [_argmax_loop(model, e, 10, set(cfg.eos_token_id)) for e in encoded]
    assert generate_ids(model, tok, encoded, prompt, 10) == expected  # batched, left-padded
    # a checkpoint whose generation_config samples, penalises repetition, searches beams and suppresses tokens
    model.generation_config.update(do_sample=True, temperature=5.0, top_k=3, repetition_penalty=3.0,
                                   no_repeat_ngram_size=1, num_beams=2, suppress_tokens=[expected[0][0]])
    saved = model.generation_config
    ids = encode_prompt(tok, qs[0], prompt)[0]
    inherited = model.generate(input_ids=torch.tensor([ids]), generation_config=cfg)[0, len(ids):].tolist()
    assert inherited[0] != expected[0][0]  # transformers would apply them to our config ...
    assert generate_ids(model, tok, encoded, prompt, 10) == expected  # ... we do not
    assert generate(model, tok, qs, prompt, max_new_tokens=10) == [tok.decode(a, skip_special_tokens=True)
                                                                  for a in expected]
    assert model.generation_config is saved  # and the model's own config is put back
