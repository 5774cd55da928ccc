"""Second-moment statistics ``C = E[k k^T]`` of the MLP keys (inputs of the MLP output projection).

All requested layers are collected in one pass over the corpus (the pass stops after the highest
layer), accumulated in float64, and cached on disk as safetensors, one file per layer, under a key
made of the model identity, the layer module, the corpus identity, the token count, the row length
and the dtype. A valid cache file is never recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .._io import replacing
from ..config import StatsConfig
from ..errors import StatsError
from ..model.arch import ArchSpec, model_identity
from ..model.batching import pad_batch
from ..model.hooks import capture, stop_after
from ..model.state import eval_mode, input_device
from ..model.weights import edit_state, edits_applied
from .corpus import corpus_id, iter_texts, resolve_source

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _token_rows(tokenizer: Any, texts: Iterator[str], max_len: int, n_tokens: int) -> Iterator[list[int]]:
    """Pack documents (separated by EOS) into rows of ``max_len`` tokens until ``n_tokens`` are yielded."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    buf: list[int] = []
    done = 0
    for text in texts:
        buf.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + sep)
        while len(buf) >= max_len and done < n_tokens:
            take = min(max_len, n_tokens - done)
            yield buf[:take]
            buf = buf[max_len:]
            done += take
        if done >= n_tokens:
            return
    if buf and done < n_tokens:
        yield buf[: n_tokens - done]


@dataclass(frozen=True)
class RowSource:
    """Token rows to collect keys over. ``identity`` is what distinguishes them in cache keys. ``n_tokens``:
    the tokens requested, or with ``n_tokens_is_bound`` only an upper bound for the progress bar (rows whose
    length is known only once they are made, such as conversations whose answers may end early)."""

    identity: dict[str, Any]
    rows: Callable[[], Iterable[list[int]]]
    n_tokens: int
    dtype: str = "float32"
    batch_size: int = 4
    description: str = "statistics"
    n_tokens_is_bound: bool = False


def corpus_source(model: nn.Module, tokenizer: Any, cfg: StatsConfig) -> RowSource:
    """Rows of ``cfg.max_len`` tokens packed from the corpus ``cfg.corpus``."""
    source = resolve_source(cfg.corpus)
    if source != cfg.corpus:
        log.warning("corpus %r is unavailable (gensim not installed); using text sampled from the model", cfg.corpus)

    def rows() -> Iterator[list[int]]:
        return _token_rows(tokenizer, iter_texts(source, model, tokenizer, cfg.max_len), cfg.max_len, cfg.n_tokens)

    ident = {"corpus": corpus_id(cfg.corpus), "n_tokens": cfg.n_tokens, "max_len": cfg.max_len, "dtype": cfg.dtype}
    return RowSource(ident, rows, cfg.n_tokens, cfg.dtype, cfg.batch_size, f"statistics ({source})")


class CovarianceCache:
    """Serves ``C`` per layer from memory, then disk, else computes it (one pass for all missing layers)."""

    def __init__(self, cache_dir: str | Path | None, show_progress: bool = True) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.show_progress = show_progress
        self._memory: dict[str, torch.Tensor] = {}

    def key(self, model: nn.Module, spec: ArchSpec, layer: int, source: RowSource) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "model": model_identity(model), "module": spec.mlp_out_path(layer),
                **source.identity}

    def _path(self, key: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        model_dir = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key["model"]["name_or_path"]).name)
        return self.cache_dir / "stats" / (model_dir or "model") / f"{key['module']}-{digest}.safetensors"

    def _load(self, path: Path, key: dict[str, Any], name: str = "mom2") -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if json.loads(meta.get("key", "null")) != key:
                log.warning("ignoring %s: its key does not match", path)
                return None
            return load_file(str(path))[name]
        except Exception as e:  # noqa: BLE001 - a corrupt cache file is recomputed, not fatal
            log.warning("ignoring unreadable statistics file %s (%s)", path, e)
            return None

    def get(self, model: nn.Module, tokenizer: Any, spec: ArchSpec, layers: Sequence[int],
            cfg: StatsConfig) -> dict[int, torch.Tensor]:
        """``{layer: C}`` over the text corpus of ``cfg`` (float32, on CPU)."""
        return self.get_source(model, spec, layers, corpus_source(model, tokenizer, cfg))

    def get_source(self, model: nn.Module, spec: ArchSpec, layers: Sequence[int],
                   source: RowSource) -> dict[int, torch.Tensor]:
        """``{layer: E[k k^T]}`` over the rows of ``source`` (float32, on CPU)."""
        out: dict[int, torch.Tensor] = {}
        missing: list[int] = []
        keys, mem_keys = {}, {}
        for layer in layers:
            key = keys[layer] = self.key(model, spec, layer, source)
            mem_key = mem_keys[layer] = json.dumps(key, sort_keys=True)
            hit = self._recall(mem_key, model)
            if hit is not None:
                out[layer] = hit
                continue
            path = self._path(key)
            c = self._load(path, key) if path is not None else None
            if c is None:
                missing.append(layer)
            else:
                log.info("loaded statistics for layer %d from %s", layer, path)
                out[layer] = self._memory[mem_key] = c
        if missing:
            computed = compute_second_moments(model, spec, missing, source, self.show_progress)
            keep = self._may_keep(model)
            for layer, c in computed.items():
                out[layer] = c
                if not keep:
                    self._memory[self._edited_key(mem_keys[layer], model)] = c
                    continue
                self._memory[mem_keys[layer]] = c
                path = self._path(keys[layer])
                if path is not None:
                    self._save(path, keys[layer], "mom2", c)
                    log.info("saved statistics for layer %d to %s", layer, path)
        return out

    @staticmethod
    def _may_keep(model: nn.Module) -> bool:
        """Statistics are cached under the base model's identity: not those an edited model produced (they are
        kept in memory for that edited state only)."""
        n = edits_applied(model)
        if n:
            log.warning("statistics computed on a model with %d edit(s) applied are used while it stays in that "
                        "state, not cached (precompute them on the unedited model: `anyedit stats`)", n)
        return not n

    @staticmethod
    def _edited_key(mem_key: str, model: nn.Module) -> str:
        return f"{mem_key}|edited:{sorted(edit_state(model))}"

    def _recall(self, mem_key: str, model: nn.Module) -> torch.Tensor | None:
        """The base model's statistics if known (also used for an edited model, as MEMIT does), else those
        computed on the model in its present edited state."""
        if mem_key in self._memory:
            return self._memory[mem_key]
        return self._memory.get(self._edited_key(mem_key, model)) if edits_applied(model) else None

    @staticmethod
    def _save(path: Path, key: dict[str, Any], name: str, tensor: torch.Tensor) -> None:
        with replacing(path) as tmp:  # another process may be writing the same statistics
            save_file({name: tensor.contiguous()}, str(tmp), metadata={"key": json.dumps(key, sort_keys=True)})

    def null_basis(self, model: nn.Module, tokenizer: Any, spec: ArchSpec, layers: Sequence[int],
                   cfg: StatsConfig, threshold: float, extra: tuple[RowSource, float] | None = None
                   ) -> dict[int, torch.Tensor]:
        """``{layer: U_0 [d_ff, n0]}``: orthonormal eigenvectors of ``C`` with eigenvalue below ``threshold``.

        AlphaEdit's projector is ``P = U_0 U_0^T``; only the basis is stored (``P x = U_0 (U_0^T x)``), from
        a symmetric eigendecomposition, cached under the statistics' key plus the threshold. ``extra =
        (source, w)`` preserves a second key set too: the basis is that of ``C + w E_source[k k^T]``.
        """
        source = corpus_source(model, tokenizer, cfg)
        out: dict[int, torch.Tensor] = {}
        covs: dict[int, torch.Tensor] | None = None
        for layer in layers:
            key = {**self.key(model, spec, layer, source), "null_space_threshold": threshold}
            if extra is not None and extra[1] > 0:
                key["extra"] = {**extra[0].identity, "weight": extra[1]}
            mem_key = json.dumps(key, sort_keys=True)
            hit = self._recall(mem_key, model)
            if hit is not None:
                out[layer] = hit
                continue
            path = self._path(key)
            if path is not None:
                path = path.with_name(path.name.replace(".safetensors", ".null.safetensors"))
            basis = self._load(path, key, "basis") if path is not None else None
            if basis is None:
                if covs is None:
                    covs = self.get_source(model, spec, layers, source)
                    if "extra" in key:
                        more = self.get_source(model, spec, layers, extra[0])
                        covs = {i: covs[i].double() + extra[1] * more[i].double() for i in covs}
                evals, evecs = torch.linalg.eigh(covs[layer].double())
                basis = evecs[:, evals < threshold].float().contiguous()
                log.info("layer %d: null space of C below %.3g has %d of %d dimensions", layer, threshold,
                         basis.shape[1], basis.shape[0])
                if not self._may_keep(model):
                    out[layer] = self._memory[self._edited_key(mem_key, model)] = basis
                    continue
                if path is not None:
                    self._save(path, key, "basis", basis)
            out[layer] = self._memory[mem_key] = basis
        return out


@torch.no_grad()
def compute_second_moments(model: nn.Module, spec: ArchSpec, layers: Sequence[int], source: RowSource,
                           show_progress: bool = True) -> dict[int, torch.Tensor]:
    """One pass over the rows of ``source`` collecting ``E[k k^T]`` for every layer in ``layers``."""
    layers = sorted(set(layers))
    dtype = getattr(torch, source.dtype)
    device = input_device(model)
    paths = [spec.mlp_out_path(i) for i in layers]
    last = model.get_submodule(spec.layer_path(layers[-1]))
    sums: dict[int, torch.Tensor] = {}
    count = 0
    bar = tqdm(total=source.n_tokens, unit="tok", desc=f"{source.description} L{layers[0]}-{layers[-1]}",
               disable=not show_progress, leave=False)
    with eval_mode(model), bar:
        batch: list[list[int]] = []
        for row in source.rows():
            batch.append(row)
            if len(batch) < source.batch_size:
                continue
            count += _accumulate(model, batch, paths, layers, last, sums, dtype, device)
            bar.update(sum(len(r) for r in batch))
            batch = []
        if batch:
            count += _accumulate(model, batch, paths, layers, last, sums, dtype, device)
            bar.update(sum(len(r) for r in batch))
    if count == 0:
        raise StatsError(f"{source.description}: no tokens to collect statistics over")
    if count < source.n_tokens and not source.n_tokens_is_bound:
        log.warning("%s: got only %d of the %d requested tokens", source.description, count, source.n_tokens)
    return {layer: (s / count).to(torch.float32).cpu() for layer, s in sums.items()}


def _accumulate(model: nn.Module, batch: list[list[int]], paths: list[str], layers: list[int], last: nn.Module,
                sums: dict[int, torch.Tensor], dtype: torch.dtype, device: torch.device) -> int:
    ids, mask = pad_batch(batch, device)
    with capture(model, inputs=paths) as rec, stop_after(last):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    keep = mask.reshape(-1).bool()
    for layer, path in zip(layers, paths):
        # keys are taken at ``dtype`` (a half-precision model's own), their products summed at float32 or
        # better: a float16 sum of squares over a batch overflows
        k = rec.inputs[path].reshape(-1, rec.inputs[path].shape[-1])[keep].to(dtype)
        k = k.to(torch.promote_types(dtype, torch.float32))
        s = (k.T @ k).double()
        sums[layer] = sums[layer] + s if layer in sums else s
    return int(keep.sum())
