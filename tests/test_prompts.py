from __future__ import annotations

import pytest

from anyedit.config import PromptConfig
from anyedit.errors import ConfigError, RequestError, TokenizationError
from anyedit.model.prompts import end_token_id, prepare_request
from anyedit.types import EditRequest

from .tiny import tiny_tokenizer


def test_chat_prompt_and_target():
    tok = tiny_tokenizer()
    req = EditRequest("What is the answer?", "The capital of France is Paris.")
    prep = prepare_request(tok, req, PromptConfig())
    text = tok.decode(list(prep.prompt_ids))
    assert text.startswith("<|im_start|>user\nWhat is the answer?<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert prep.target_ids[-1] == im_end == prep.end_token_id
    assert tok.decode(list(prep.target_ids[:-1])) == req.answer
    # the question's last token is the "?"
    assert tok.decode([prep.prompt_ids[prep.question_end]]).endswith("?")
    assert len(prep.target_offsets) == len(prep.target_ids)


def test_answer_starting_with_whitespace_keeps_its_own_tokens():
    tok = tiny_tokenizer()
    prep = prepare_request(tok, EditRequest("Q?", "\n  indented answer"), PromptConfig())
    assert tok.decode(list(prep.target_ids[:-1])) == "\n  indented answer"


def test_raw_mode_appends_eos_and_has_no_template():
    tok = tiny_tokenizer(chat=False)
    prep = prepare_request(tok, EditRequest("The capital of France is", " Paris."), PromptConfig())
    assert tok.decode(list(prep.prompt_ids)) == "The capital of France is"
    assert prep.target_ids[-1] == tok.eos_token_id
    with pytest.raises(ConfigError, match="chat template"):
        prepare_request(tok, EditRequest("Q", "A"), PromptConfig(chat_template=True))


def test_bad_requests():
    tok = tiny_tokenizer()
    with pytest.raises(RequestError, match="answer is empty"):
        EditRequest("Q?", "   ")
    with pytest.raises(RequestError, match="question is empty"):
        EditRequest("", "A")
    with pytest.raises(TokenizationError, match="context"):
        prepare_request(tok, EditRequest("Q?", "word " * 300), PromptConfig(), max_length=256)
    with pytest.raises(RequestError, match="missing"):
        EditRequest.from_dict({"question": "Q?"})


def test_end_token_is_the_templates_end_of_turn():
    tok = tiny_tokenizer()
    assert end_token_id(tok, PromptConfig()) == tok.convert_tokens_to_ids("<|im_end|>")
    raw = tiny_tokenizer(chat=False)
    assert end_token_id(raw, PromptConfig()) == raw.eos_token_id
