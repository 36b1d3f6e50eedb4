"""How rows are split for training: train / validation / test, from the seed alone.

Public API::

    split_rows(target_values, *, task, val_fraction, seed, test_fraction=0.0) -> Split(train, val, test)

- Rows whose target is missing are in no split.
- Classification is stratified: each class gives its rounded share to validation, then its rounded
  share to test, and always keeps at least one row in train (a class of one row stays in train).
  Regression, or classes too small to give validation a single row, is a plain shuffle that keeps
  at least one row in train and one in validation.
- Validation chooses the epoch (early stopping); test is scored once, at the end, so the score a
  version reports was not used to pick anything. With ``test_fraction=0`` the train and validation
  rows are exactly those of the two-way split before test existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tabular.values import is_missing

__all__ = ["Split", "split_rows"]


class Split(NamedTuple):
    """Sorted row indices of each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_rows(
    target_values: Sequence[Any], *, task: str, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> Split:
    """The split `train_tabular` uses; exposed so that a comparison can train other models on the same rows."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be fractions that leave rows to train on")
    present = [i for i, v in enumerate(target_values) if not is_missing(v)]
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    test: list[np.ndarray] = []
    if task == "classification":
        groups: dict[Any, list[int]] = {}
        for i in present:
            groups.setdefault(target_values[i], []).append(i)
        for members in groups.values():
            shuffled = rng.permutation(members)
            n_val = min(int(len(members) * val_fraction + 0.5), len(members) - 1)
            n_test = min(int(len(members) * test_fraction + 0.5), len(members) - 1 - n_val)
            val.append(shuffled[:n_val])
            test.append(shuffled[n_val : n_val + n_test])
    picked = np.concatenate(val) if val else np.empty(0, np.int64)
    held = np.concatenate(test) if test else np.empty(0, np.int64)
    if not picked.size and present:
        # Regression, or classes too small to give one row each: a plain shuffle.
        shuffled = rng.permutation(present)
        n = len(present)
        n_val = min(max(1, int(n * val_fraction + 0.5)), n - 1)
        n_test = max(0, min(int(n * test_fraction + 0.5), n - 1 - n_val))
        picked, held = shuffled[:n_val], shuffled[n_val : n_val + n_test]
    out = np.zeros(len(target_values), dtype=np.int8)
    out[picked.astype(np.int64)] = 1
    out[held.astype(np.int64)] = 2
    rows = np.array(present, dtype=np.int64)
    return Split(rows[out[rows] == 0], rows[out[rows] == 1], rows[out[rows] == 2])
