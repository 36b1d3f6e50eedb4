"""The time-boxed search: every trial's curve reported, the winner chosen on validation, the budget kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tabular import tuning
from tabular.checkpoint import EpochReport
from tabular.errors import TrainingCancelled, TrainingError
from tabular.profiling import profile_csv, read_columns
from tests.tabular.test_training import make_csv

SMALL = {"epochs": 6, "patience": 3, "hidden": [8]}
TRIALS: tuple[dict[str, Any], ...] = ({}, {"lr": 0.01}, {"hidden": [16]})


@pytest.fixture
def data(tmp_path: Path) -> tuple[Any, dict[str, list[Any]]]:
    path = make_csv(tmp_path / "data.csv", rows=200)
    profile = profile_csv(path)
    return profile, read_columns(path, profile, profile.names)


def test_every_trial_is_streamed_and_the_best_validation_loss_wins(data, monkeypatch) -> None:
    profile, columns = data
    monkeypatch.setattr(tuning, "TRIALS", TRIALS)
    reports: list[EpochReport] = []
    result = tuning.tune_tabular(columns, profile, target="kind", task="classification", time_limit_s=3600,
                                 hyperparameters=SMALL, on_epoch=reports.append)
    trials = result.metrics["tuning"]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    assert {r.trial for r in reports} == {0, 1, 2}
    for t in trials:
        epochs = [r.epoch for r in reports if r.trial == t["trial"]]
        assert epochs == list(range(1, t["epochs_run"] + 1))
        assert reports[0].to_dict()["trial"] == 0
    winner = min(trials, key=lambda t: t["val_loss"])
    assert result.metrics["trial"] == winner["trial"] and result.metrics["val_loss"] == winner["val_loss"]
    assert result.metrics["scored_on"] == "test"
    assert result.hyperparameters["hidden"] == list(TRIALS[winner["trial"]].get("hidden", SMALL["hidden"]))


def test_no_trial_starts_after_the_time_limit(data, monkeypatch) -> None:
    profile, columns = data
    monkeypatch.setattr(tuning, "TRIALS", TRIALS)
    now = iter([0.0])  # the deadline is set at 0; every later reading is past it
    monkeypatch.setattr(tuning, "_clock", lambda: next(now, 1e9))
    reports: list[EpochReport] = []
    result = tuning.tune_tabular(columns, profile, target="kind", task="classification", time_limit_s=10,
                                 hyperparameters=SMALL, on_epoch=reports.append)
    assert [t["trial"] for t in result.metrics["tuning"]] == [0]
    assert {r.trial for r in reports} == {0}


def test_cancel_and_bad_limits(data) -> None:
    profile, columns = data
    with pytest.raises(TrainingCancelled):
        tuning.tune_tabular(columns, profile, target="kind", task="classification", time_limit_s=60,
                            hyperparameters=SMALL, should_cancel=lambda: True)
    with pytest.raises(TrainingError, match="time_limit_s"):
        tuning.tune_tabular(columns, profile, target="kind", task="classification", time_limit_s=0)
