"""Tiny models and a tiny tokenizer built in-process (no downloads)."""

from __future__ import annotations

import functools

import torch

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TEXT = """The quick brown fox jumps over the lazy dog. A stitch in time saves nine.
def add(a, b):
    return a + b
Photosynthesis turns light into chemical energy. The capital of France is Paris.
What is the answer? Write a poem about rain. Numbers 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] : ; , . ! ?
"""


@functools.lru_cache(maxsize=2)
def tiny_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TEXT] * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>" if chat else "<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHATML
    return fast


def tiny_model(kind: str, seed: int = 0, vocab: int | None = None):
    """A random 4-layer model of the given family (float32, eval mode)."""
    import transformers as tf

    vocab = vocab or len(tiny_tokenizer())
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=2, pad_token_id=0, hidden_size=64,
                  intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=256)
    if kind == "llama":
        cfg = tf.LlamaConfig(num_key_value_heads=2, **common)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(num_key_value_heads=2, **common)
    elif kind == "mistral":
        cfg = tf.MistralConfig(num_key_value_heads=2, **common)
    elif kind == "qwen3":
        cfg = tf.Qwen3Config(num_key_value_heads=2, head_dim=16, **common)
    elif kind == "gemma":
        cfg = tf.GemmaConfig(num_key_value_heads=2, head_dim=16, **common)
    elif kind == "gemma2":
        cfg = tf.Gemma2Config(num_key_value_heads=2, head_dim=16, **common)
    elif kind == "phi3":
        cfg = tf.Phi3Config(num_key_value_heads=2, **common)
    elif kind == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, bos_token_id=0, eos_token_id=2, n_embd=64, n_layer=4, n_head=4,
                            n_positions=256, n_inner=128)
    elif kind == "gptj":
        cfg = tf.GPTJConfig(vocab_size=vocab, bos_token_id=0, eos_token_id=2, n_embd=64, n_layer=4, n_head=4,
                            n_positions=256, n_inner=128, rotary_dim=8)
    elif kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(vocab_size=vocab, bos_token_id=0, eos_token_id=2, hidden_size=64, intermediate_size=128,
                               num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=256)
    else:
        raise ValueError(kind)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    return model


def weights_of(model) -> dict[str, torch.Tensor]:
    """A copy of every tensor of the model's state, to compare against later."""
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def same_weights(model, state: dict[str, torch.Tensor]) -> bool:
    """Whether the model's state equals ``state`` bit for bit."""
    return all(torch.equal(p, state[n]) for n, p in model.state_dict().items())
