from __future__ import annotations

import pytest

from anyedit.model.hooks import no_hooks_left

from .tiny import tiny_model, tiny_tokenizer


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def tiny(request):
    """(model, tokenizer) for each of the three shapes the unit tests cover."""
    model = tiny_model(request.param)
    yield model, tiny_tokenizer()
    assert no_hooks_left(model), "a hook was left on the model"


@pytest.fixture
def llama():
    model = tiny_model("llama")
    yield model, tiny_tokenizer()
    assert no_hooks_left(model), "a hook was left on the model"


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(
        f"Paragraph {i}: the quick brown fox jumps over the lazy dog {i} times. A stitch in time saves nine."
        for i in range(60)))
    return p
