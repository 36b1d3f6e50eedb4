"""Training options: `Hyperparameters`, parsed from a request's JSON with errors naming the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tabular.errors import TrainingError

__all__ = ["Hyperparameters"]


@dataclass(frozen=True)
class Hyperparameters:
    """Training options. The defaults are what the service uses; bench/TRAINING.md has how they compare.

    `val_fraction` of the rows choose the epoch, `test_fraction` score the result (0: no test split;
    the metrics are then the validation rows'). Categorical columns (`tabular.features`): values seen
    fewer than `min_count` times in train share the unknown slot; a vocabulary of at most `onehot_max`
    values is one-hot, a larger one embedded; `max_categories` > 0 keeps only the most frequent.
    """

    hidden: tuple[int, ...] = (128, 64)
    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    val_fraction: float = 0.15
    seed: int = 0
    dropout: float = 0.1
    test_fraction: float = 0.15
    min_count: int = 2
    onehot_max: int = 10
    max_categories: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Hyperparameters:
        """Defaults overridden by `data`; `TrainingError` naming the first bad field."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise TrainingError("hyperparameters", "must be an object")
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                raise TrainingError(str(key), f"unknown hyperparameter (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "hidden":
                values[key] = _hidden(value)
            else:
                kind, low, high, low_open, high_open = _BOUNDS[key]
                values[key] = _number(key, value, kind, low, high, low_open=low_open, high_open=high_open)
        out = cls(**values)
        if out.val_fraction + out.test_fraction > 0.6:
            raise TrainingError("test_fraction", "val_fraction + test_fraction must leave at least 40% to train on")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


# name: (type, low, high, low bound excluded, high bound excluded)
_BOUNDS: dict[str, tuple[type, float, float, bool, bool]] = {
    "epochs": (int, 1, 10_000, False, False),
    "batch_size": (int, 1, 65_536, False, False),
    "patience": (int, 1, 10_000, False, False),
    "seed": (int, 0, 2**63 - 1, False, False),
    "lr": (float, 0.0, 1.0, True, False),
    "weight_decay": (float, 0.0, 1.0, False, False),
    "val_fraction": (float, 0.0, 0.5, True, False),
    "dropout": (float, 0.0, 1.0, False, True),
    "test_fraction": (float, 0.0, 0.5, False, False),
    "min_count": (int, 1, 1_000_000, False, False),
    "onehot_max": (int, 0, 1000, False, False),
    "max_categories": (int, 0, 100_000, False, False),
}



def _hidden(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or len(value) > 8:
        raise TrainingError("hidden", "must be a list of at most 8 layer widths")
    for width in value:
        if type(width) is not int or not 1 <= width <= 4096:
            raise TrainingError("hidden", f"layer widths must be integers from 1 to 4096, got {width!r}")
    return tuple(value)


def _number(name: str, value: Any, kind: type, low: float, high: float, *, low_open: bool, high_open: bool) -> Any:
    if kind is int and type(value) is not int:
        raise TrainingError(name, f"must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)):
        raise TrainingError(name, f"must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise TrainingError(name, f"must be in {interval}, got {value!r}")
    return kind(value)

