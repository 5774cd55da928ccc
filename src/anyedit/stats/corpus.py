"""Text sources for the covariance statistics.

* ``wikipedia-offline``: ~100 English Wikipedia articles (~3 M characters, ~700k tokens) shipped in the
  test data of the PyPI package ``gensim`` (installed by ``make setup``), cleaned of wiki markup with
  gensim's own ``filter_wiki``. Chosen as the default because it is real English prose like the
  Wikipedia sample MEMIT and AnyEdit use, and it installs from PyPI with no hub download.
* ``model-samples``: text sampled from the model itself (the fallback when gensim is absent).
* a ``.txt`` file (paragraphs separated by blank lines) or ``.jsonl`` file (``"text"`` field).
* ``hf:<dataset>[:<config>]``: a Hugging Face dataset's ``text`` column (needs ``datasets`` and network).
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .._io import iter_jsonl, read_records
from ..errors import CorpusError
from ..model.generation import seeded, without_model_defaults
from ..model.state import input_device

WIKI_OFFLINE = "wikipedia-offline"
MODEL_SAMPLES = "model-samples"
_GENSIM_WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _gensim_wiki_path() -> Path | None:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / _GENSIM_WIKI
    return p if p.is_file() else None


def resolve_source(source: str) -> str:
    """The source actually used: ``wikipedia-offline`` falls back to ``model-samples`` without gensim."""
    if source == WIKI_OFFLINE and _gensim_wiki_path() is None:
        return MODEL_SAMPLES
    return source


def corpus_id(source: str) -> str:
    """A stable identity of a source for cache keys (file sources include a content hash)."""
    source = resolve_source(source)
    if source in (WIKI_OFFLINE, MODEL_SAMPLES) or source.startswith("hf:"):
        return source
    p = Path(source).expanduser()
    if not p.is_file():
        raise CorpusError(f"corpus file not found: {source}")
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"file:{p.name}:{h.hexdigest()[:16]}"


def _clean_wiki(text: str) -> str:
    text = re.sub(r"'{2,}", "", text)
    paras = [re.sub(r"[ \t]+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if len(p) >= 40 and not p.startswith(("{", "|", "!")))


def _wiki_texts() -> Iterator[str]:
    path = _gensim_wiki_path()
    if path is None:
        raise CorpusError("the wikipedia-offline corpus needs gensim: pip install gensim==4.4.0")
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    with bz2.open(path) as f:
        for _title, text, _pid in extract_pages(f):
            if not text or text.lstrip().lower().startswith("#redirect"):
                continue
            cleaned = _clean_wiki(filter_wiki(text))
            if cleaned:
                yield cleaned


def _file_texts(path: Path) -> Iterator[str]:
    if path.suffix in (".json", ".jsonl"):
        records = iter_jsonl(path, "corpus file", CorpusError) if path.suffix == ".jsonl" else \
            read_records(path, "corpus file", CorpusError)  # JSONL is streamed: a corpus may be large
        for i, rec in enumerate(records, 1):
            if not isinstance(rec, dict):
                raise CorpusError(f"{path}, record {i}: not a JSON object with a 'text' field")
            text = rec.get("text")
            if isinstance(text, str) and text.strip():
                yield text
    else:
        content = path.read_text(encoding="utf-8", errors="replace")
        for para in re.split(r"\n\s*\n", content):
            if para.strip():
                yield para.strip()


def _hf_texts(name: str) -> Iterator[str]:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise CorpusError("hf: corpora need the 'datasets' package: pip install datasets") from None
    ds_name, _, ds_config = name.partition(":")
    try:
        ds = datasets.load_dataset(ds_name, ds_config or None, split="train", streaming=True)
    except Exception as e:  # noqa: BLE001 - network and hub errors come in many types
        raise CorpusError(f"cannot load dataset {name!r}: {str(e).splitlines()[0]}") from None
    for row in ds:
        if isinstance(row.get("text"), str) and row["text"].strip():
            yield row["text"]


def _model_texts(model: Any, tokenizer: Any, length: int) -> Iterator[str]:
    if model is None or tokenizer is None:
        raise CorpusError("the model-samples corpus needs the model and tokenizer")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = input_device(model)
    gen = torch.Generator(device="cpu").manual_seed(0)

    own = getattr(model, "generation_config", None)  # the checkpoint's stop tokens still end a sample
    eos = getattr(own, "eos_token_id", None)
    eos = eos if eos is not None else tokenizer.eos_token_id
    while True:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        with seeded(seed), without_model_defaults(model):  # pure sampling, whatever the checkpoint's defaults
            out = model.generate(torch.tensor([[start]], device=device), do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, max_new_tokens=length, min_new_tokens=length // 2,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id or start)
        yield tokenizer.decode(out[0, 1:], skip_special_tokens=True)


def iter_texts(source: str, model: Any = None, tokenizer: Any = None, length: int = 256) -> Iterator[str]:
    """Yield documents of a corpus source (see module doc)."""
    source = resolve_source(source)
    if source == WIKI_OFFLINE:
        yield from _wiki_texts()
    elif source == MODEL_SAMPLES:
        yield from _model_texts(model, tokenizer, length)
    elif source.startswith("hf:"):
        yield from _hf_texts(source[3:])
    else:
        p = Path(source).expanduser()
        if not p.is_file():
            raise CorpusError(f"corpus file not found: {source}")
        yield from _file_texts(p)
