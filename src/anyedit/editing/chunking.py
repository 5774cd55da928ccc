"""Paper Step 1: split the target into chunks and place each chunk's edited position (pure functions).

All boundaries are token indices of the one tokenization of the answer (:class:`PreparedRequest`);
sentence boundaries found in the text are mapped onto it through the token character offsets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ..config import ChunkingConfig
from ..errors import ConfigError
from ..types import Chunk, PreparedRequest

# A segment ends after sentence punctuation followed by whitespace, or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")


def window_spans(n: int, window: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of a sliding window over ``n`` tokens.

    Every token is covered; a window that would lie entirely inside the previous one is not emitted
    (the reference's overlap edge case).
    """
    if n < 1:
        raise ValueError(f"cannot chunk {n} tokens")
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    spans, start, stride = [], 0, window - overlap
    while True:
        end = min(start + window, n)
        spans.append((start, end))
        if end == n:
            return spans
        start += stride


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a new sentence or line starts (excluding 0)."""
    return sorted({m.end() for m in _BOUNDARY.finditer(text) if 0 < m.end() < len(text)})


def sentence_spans(offsets: Sequence[tuple[int, int]], text: str, window: int) -> list[tuple[int, int]]:
    """Token spans that end at sentence/line boundaries, merged up to ``window`` tokens.

    A sentence longer than ``window`` tokens is cut into windows. Trailing special tokens (offset at
    the end of the text) join the last span.
    """
    n = len(offsets)
    if n < 1:
        raise ValueError("cannot chunk 0 tokens")
    starts = sentence_starts(text)
    # token index where each sentence begins: the first token that reaches past the boundary, i.e. the one holding
    # the sentence's first character (byte-level BPE glues the space before a word to it: " A" spans the boundary)
    cuts, j = [], 0
    for i, (_s, e) in enumerate(offsets):
        while j < len(starts) and e > starts[j]:
            if i > 0 and (not cuts or cuts[-1] != i):
                cuts.append(i)
            j += 1
    sentences = list(zip([0, *cuts], [*cuts, n]))
    spans: list[tuple[int, int]] = []
    for s, e in sentences:
        if spans and (e - spans[-1][0]) <= window:
            spans[-1] = (spans[-1][0], e)  # merge into the current chunk
            continue
        while e - s > window:
            spans.append((s, s + window))
            s += window
        spans.append((s, e))
    return spans


def snap_spans(spans: Sequence[tuple[int, int]], scores: Sequence[float], snap: int) -> list[tuple[int, int]]:
    """Move each boundary between contiguous spans by at most ``snap`` tokens to the start ``i`` with the
    highest ``scores[i]`` (the score of a chunk starting at target token ``i``; ties keep the original
    boundary, then the earlier one). Spans stay contiguous and non-empty; the first start and the last end
    do not move."""
    if snap <= 0 or len(spans) < 2:
        return list(spans)
    n = spans[-1][1]
    cuts = [s for s, _ in spans[1:]]
    moved: list[int] = []
    for k, b in enumerate(cuts):
        lo = max(b - snap, (moved[-1] if moved else 0) + 1)
        hi = min(b + snap, n - 1, (cuts[k + 1] - 1) if k + 1 < len(cuts) else n - 1)
        best = max(range(lo, hi + 1), key=lambda i: (scores[i], i == b, -i))
        moved.append(best)
    return list(zip([spans[0][0], *moved], [*moved, n]))


def make_chunks(prepared: PreparedRequest, cfg: ChunkingConfig,
                anchor_scores: Sequence[float] | None = None, shared: int = 0) -> list[Chunk]:
    """Chunks of a prepared request with their anchor positions in ``prompt + target``.

    ``anchor_scores`` (one per position of ``prompt + target``: how cheap that position's key is to edit)
    is used when ``cfg.snap`` > 0 to move the boundaries between chunks (see :class:`ChunkingConfig`);
    without scores the boundaries stay where the mode puts them.
    ``shared``: how many leading tokens this text has in common with another edit's text (see
    :func:`shared_prefixes`). Hidden states there are the same in both texts, so two edits' targets at them would
    contradict each other: with ``first_anchor="question"`` the first chunk is spread only over the question tokens
    from there on (unless the whole question is shared, i.e. the same question edited again).
    """
    n, p = len(prepared.target_ids), prepared.prompt_len
    if cfg.mode == "none":
        spans = [(0, n)]
    elif cfg.mode == "window":
        spans = window_spans(n, cfg.window, cfg.overlap)
    else:
        spans = sentence_spans(prepared.target_offsets, prepared.request.answer, cfg.window)
    if cfg.snap and anchor_scores is not None and cfg.mode != "none":
        spans = snap_spans(spans, [anchor_scores[p + i - 1] if i > 0 else 0.0 for i in range(n)], cfg.snap)
    if cfg.first_window and cfg.mode != "none" and spans[0][1] - spans[0][0] > cfg.first_window:
        (s0, e0), split = spans[0], spans[0][0] + cfg.first_window
        spans = [(s0, split), (split, e0), *spans[1:]]
    chunks: list[Chunk] = []
    for k, (s, e) in enumerate(spans):
        anchors: tuple[int, ...] = (p + s - 1,)
        if k > 0 and cfg.anchor_span > 1:  # spread over the answer tokens before the chunk, after the previous anchors
            anchors = tuple(range(max(p + s - cfg.anchor_span, chunks[-1].anchors[-1] + 1, p), p + s))
        if k == 0 and cfg.first_anchor == "question_end":
            anchors = (prepared.question_end,)
        elif k == 0 and cfg.first_anchor == "question":
            first = max(prepared.question_start, shared) if shared <= prepared.question_end else prepared.question_start
            anchors = tuple(range(first, prepared.question_end + 1))
        elif k == 0 and cfg.first_anchor == "subject_last":
            if prepared.subject_end is None:
                rid = prepared.request.id
                raise ConfigError(f"chunking.first_anchor='subject_last' needs a subject, and request "
                                  f"{rid + ' ' if rid else ''}{prepared.request.question[:60]!r} has none "
                                  "(give it a 'subject' that occurs in the question)")
            anchors = (prepared.subject_end,)
        chunks.append(Chunk(start=s, end=e, anchors=anchors))
    return chunks


def shared_prefixes(texts: Sequence[Sequence[int]], groups: Sequence[int],
                    others: Sequence[Sequence[int]] = ()) -> list[int]:
    """For each of ``texts``: the length of the longest token prefix it has in common with a text of another
    group (``groups[i]``: which request text ``i`` words; its other wordings are not counted) or with any of
    ``others`` (e.g. the texts of the edits applied before)."""
    out = []
    for i, t in enumerate(texts):
        rivals = [u for j, u in enumerate(texts) if groups[j] != groups[i]] + list(others)
        out.append(max((len(os.path.commonprefix([list(t), list(u)])) for u in rivals), default=0))
    return out
