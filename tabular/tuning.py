"""A small time-boxed hyperparameter search around the service defaults.

Public API::

    tune_tabular(columns, profile, *, target, task, time_limit_s, features=None, hyperparameters=None,
                 on_epoch=None, should_cancel=None) -> TrainResult
    TRIALS                                     # the changes tried, in order, on top of the caller's options

Trials run one after another, each a whole `train_tabular` run on the same split (same seed), so they
differ only in the options listed in `TRIALS`. The first trial (the caller's options as given) always
runs to the end, so there is always a model; no trial starts after `time_limit_s`, and the trial
running when the time is up is stopped and left out. The winner has the lowest validation loss at its
best epoch: the test split chooses nothing, so the winner's test metrics stay honest. Every epoch of
every trial goes to `on_epoch` as an `EpochReport` with ``trial`` set (0, 1, ...), so a client draws
one curve per trial. The result's ``metrics["tuning"]`` lists each finished trial (its changes,
validation loss and metric, epochs, seconds) and ``metrics["trial"]`` the winner. Tuning does not
checkpoint: a job that restarts tunes again from the first trial.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tabular.checkpoint import EpochReport
from tabular.errors import TrainingCancelled, TrainingError
from tabular.options import Hyperparameters
from tabular.profiling import DatasetProfile
from tabular.training import TrainResult, train_tabular

__all__ = ["MAX_TIME_LIMIT_S", "MIN_TIME_LIMIT_S", "TRIALS", "tune_tabular"]

_clock = time.monotonic  # the search's clock; tests replace it
MIN_TIME_LIMIT_S = 1.0
MAX_TIME_LIMIT_S = 24 * 3600.0
TRIALS: tuple[dict[str, Any], ...] = (
    {},
    {"lr": 1e-3},
    {"lr": 5e-3},
    {"hidden": [256, 128]},
    {"hidden": [64, 32], "dropout": 0.0},
    {"dropout": 0.3, "weight_decay": 1e-3},
    {"hidden": [256, 128], "lr": 1e-3, "dropout": 0.2},
)


def tune_tabular(
    columns: Mapping[str, Sequence[Any]],
    profile: DatasetProfile,
    *,
    target: str,
    task: str,
    time_limit_s: float,
    features: Sequence[str] | None = None,
    hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """The best of `TRIALS` within `time_limit_s` seconds; `TrainingCancelled` if `should_cancel` says so."""
    if isinstance(time_limit_s, bool) or not MIN_TIME_LIMIT_S <= time_limit_s <= MAX_TIME_LIMIT_S:
        raise TrainingError("time_limit_s", f"must be from {MIN_TIME_LIMIT_S:g} to {MAX_TIME_LIMIT_S:g} seconds")
    base = (hyperparameters if isinstance(hyperparameters, Hyperparameters)
            else Hyperparameters.from_dict(hyperparameters)).to_dict()
    deadline = _clock() + time_limit_s
    best: TrainResult | None = None
    finished: list[dict[str, Any]] = []
    for trial, change in enumerate(TRIALS):
        if best is not None and _clock() >= deadline:
            break
        out_of_time = False

        def cancel(first: bool = best is None) -> bool:
            nonlocal out_of_time
            if should_cancel is not None and should_cancel():
                return True
            out_of_time = not first and _clock() >= deadline
            return out_of_time

        def report(r: EpochReport, trial: int = trial) -> None:
            if on_epoch is not None:
                on_epoch(dataclasses.replace(r, trial=trial))

        started = time.monotonic()
        try:
            result = train_tabular(columns, profile, target=target, task=task, features=features,
                                   hyperparameters={**base, **change}, on_epoch=report, should_cancel=cancel)
        except TrainingCancelled:
            if out_of_time:
                break
            raise
        finished.append({
            "trial": trial,
            "changes": change,
            "val_loss": result.metrics["val_loss"],
            "val_metric": result.metrics["val_metric"],
            "epochs_run": result.epochs_run,
            "seconds": time.monotonic() - started,
        })
        if best is None or result.metrics["val_loss"] < best.metrics["val_loss"]:
            best = result
            best.metrics["trial"] = trial
    assert best is not None, "the first trial always finishes or raises"
    best.metrics["tuning"] = finished
    best.metrics["time_limit_s"] = time_limit_s
    return best
