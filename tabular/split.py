"""How rows are split for training: from the seed alone, stratified per class for classification."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tabular.values import is_missing

__all__ = ["split_rows"]


def split_rows(
    target_values: Sequence[Any], *, task: str, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices (into `target_values`) of the train and validation splits `train_tabular` uses.

    Rows with a missing target are in neither. Exposed so that a comparison can train other models
    on exactly the same rows.
    """
    present = [i for i, v in enumerate(target_values) if not is_missing(v)]
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    if task == "classification":
        groups: dict[Any, list[int]] = {}
        for i in present:
            groups.setdefault(target_values[i], []).append(i)
        for members in groups.values():
            shuffled = rng.permutation(members)
            val.append(shuffled[: int(len(members) * val_fraction + 0.5)])
    picked = np.concatenate(val) if val else np.empty(0, np.int64)
    if not picked.size and present:
        # Regression, or classes too small to give one row each: a plain shuffle.
        shuffled = rng.permutation(present)
        picked = shuffled[: min(max(1, int(len(present) * val_fraction + 0.5)), len(present) - 1)]
    in_val = np.zeros(len(target_values), dtype=bool)
    in_val[picked.astype(np.int64)] = True
    rows = np.array(present, dtype=np.int64)
    return rows[~in_val[rows]], np.sort(picked.astype(np.int64))


