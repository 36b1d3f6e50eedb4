"""The train / validation / test split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tabular.split import split_rows


def labels(seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    values: list[Any] = [str(v) for v in rng.choice(["a", "b", "c"], 1000, p=[0.7, 0.28, 0.02])]
    values[5] = values[17] = None
    return values


def test_three_parts_are_disjoint_cover_every_row_with_a_target_and_are_stratified() -> None:
    target = labels()
    split = split_rows(target, task="classification", val_fraction=0.15, test_fraction=0.15, seed=3)
    everything = np.concatenate(split)
    assert len(everything) == len(set(everything.tolist())) == 998
    assert 5 not in everything and 17 not in everything
    for part in split:
        assert list(part) == sorted(part)
    for cls in ("a", "b", "c"):
        members = sum(1 for v in target if v == cls)
        assert sum(1 for i in split.test if target[i] == cls) == int(members * 0.15 + 0.5)
        assert sum(1 for i in split.val if target[i] == cls) == int(members * 0.15 + 0.5)


def test_the_split_comes_from_the_seed_alone() -> None:
    target = labels()
    a = split_rows(target, task="classification", val_fraction=0.2, test_fraction=0.2, seed=1)
    b = split_rows(target, task="classification", val_fraction=0.2, test_fraction=0.2, seed=1)
    c = split_rows(target, task="classification", val_fraction=0.2, test_fraction=0.2, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.test, c.test)


def test_no_test_fraction_gives_the_two_way_split() -> None:
    target = labels()
    split = split_rows(target, task="classification", val_fraction=0.2, seed=0)
    assert split.test.size == 0 and split.train.size + split.val.size == 998


def test_every_class_keeps_a_training_row() -> None:
    target = ["a"] * 20 + ["b", "c", "c"]
    split = split_rows(target, task="classification", val_fraction=0.4, test_fraction=0.4, seed=0)
    trained = {target[i] for i in split.train}
    assert trained == {"a", "b", "c"}


def test_regression_shuffles_and_keeps_rows_in_every_part() -> None:
    values: list[Any] = [float(v) for v in range(10)]
    split = split_rows(values, task="regression", val_fraction=0.2, test_fraction=0.2, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 2, 2)
    tiny = split_rows([1.0, 2.0], task="regression", val_fraction=0.2, test_fraction=0.2, seed=0)
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (1, 1, 0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.5, 0.5), (0.2, -0.1)])
def test_fractions_must_leave_rows_to_train_on(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_rows([1.0] * 10, task="regression", val_fraction=val, test_fraction=test, seed=0)
