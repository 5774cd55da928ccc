"""pad_batch: the one padding routine behind statistics, tracing, UnKE, FT, locality and generation."""

from __future__ import annotations

import pytest
import torch

from anyedit.model.batching import pad_batch


def test_right_padding_with_mask():
    ids, mask = pad_batch([[5, 6, 7], [8]], torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long


def test_left_padding_with_a_pad_id():
    ids, mask = pad_batch([(1, 2), (3, 4, 5, 6)], torch.device("cpu"), pad=9, left=True)
    assert ids.tolist() == [[9, 9, 1, 2], [3, 4, 5, 6]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="at least one row"):
        pad_batch([], torch.device("cpu"))
