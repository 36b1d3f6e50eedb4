"""Checkpoints of inference/training.py: a run stopped after any epoch and resumed from that epoch's
checkpoint ends exactly as the run that never stopped."""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tabular.profiling import DatasetProfile, profile_csv, read_columns
from tabular.training import Checkpoint, CheckpointError, EpochReport, TrainResult, train_tabular
from tests.tabular.test_training import FEATURES, make_csv

TIMINGS = {"elapsed_s", "eta_s"}


class Crash(Exception):
    """Stands in for a worker that dies between two epochs."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetProfile, dict[str, list[Any]]]:
    path = make_csv(tmp_path_factory.mktemp("resume") / "data.csv", rows=240)
    profile = profile_csv(path)
    return profile, read_columns(path, profile, profile.names)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Run:
    result: TrainResult
    reports: list[EpochReport]
    checkpoints: dict[int, bytes]


def train(dataset: tuple[DatasetProfile, dict[str, list[Any]]], target: str, hp: dict[str, Any], *,
          crash_after: int | None = None, resume: bytes | None = None,
          checkpoints: dict[int, bytes] | None = None) -> Run:
    """Trains, keeping every checkpoint as bytes in `checkpoints`; raises Crash once epoch `crash_after`
    is reported."""
    profile, columns = dataset
    reports: list[EpochReport] = []
    saved = {} if checkpoints is None else checkpoints

    def on_epoch(report: EpochReport) -> None:
        reports.append(report)
        if report.epoch == crash_after:
            raise Crash

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        saved[checkpoint.epoch] = checkpoint.to_bytes()

    result = train_tabular(
        columns, profile, target=target, task="classification" if target == "kind" else "regression",
        features=FEATURES, hyperparameters=hp, on_epoch=on_epoch, on_checkpoint=on_checkpoint,
        resume=Checkpoint.from_bytes(resume) if resume is not None else None,
    )
    return Run(result, reports, saved)


def without_timings(report: EpochReport) -> dict[str, Any]:
    return {k: v for k, v in report.to_dict().items() if k not in TIMINGS}


def assert_same_result(resumed: TrainResult, uninterrupted: TrainResult) -> None:
    assert resumed.state_dict.keys() == uninterrupted.state_dict.keys()
    for name, tensor in uninterrupted.state_dict.items():
        assert torch.equal(resumed.state_dict[name], tensor), name  # bit for bit
    a, b = resumed.to_dict(), uninterrupted.to_dict()
    a["metrics"].pop("train_seconds")
    b["metrics"].pop("train_seconds")
    assert a == b


@pytest.mark.parametrize("target", ["kind", "price"])
def test_resumed_after_any_epoch_ends_as_the_uninterrupted_run(dataset, target: str) -> None:
    # Dropout on, so the global torch RNG matters; small batches, so the shuffle generator does.
    hp = {"epochs": 8, "patience": 8, "hidden": [16, 8], "dropout": 0.3, "batch_size": 16, "seed": 3}
    whole = train(dataset, target, hp)
    assert sorted(whole.checkpoints) == list(range(1, 9))

    for k in (1, 4, 7):
        crashed: dict[int, bytes] = {}
        with pytest.raises(Crash):
            train(dataset, target, hp, crash_after=k, checkpoints=crashed)
        # The checkpoint is taken before the epoch is reported, so a crash in between loses no epoch.
        assert sorted(crashed) == list(range(1, k + 1))
        resumed = train(dataset, target, hp, resume=crashed[k])
        # No epoch runs (or is reported) twice, and the ones after k are reported as they were.
        assert [r.epoch for r in resumed.reports] == list(range(k + 1, 9))
        assert [without_timings(r) for r in resumed.reports] == [without_timings(r) for r in whole.reports[k:]]
        assert_same_result(resumed.result, whole.result)
        assert Checkpoint.from_bytes(crashed[k]).report.epoch == k


def test_a_run_stopped_twice_ends_as_the_uninterrupted_run(dataset) -> None:
    hp = {"epochs": 6, "patience": 6, "hidden": [8], "dropout": 0.2, "batch_size": 32}
    whole = train(dataset, "kind", hp)
    saved: dict[int, bytes] = {}
    with pytest.raises(Crash):
        train(dataset, "kind", hp, crash_after=2, checkpoints=saved)
    with pytest.raises(Crash):
        train(dataset, "kind", hp, crash_after=5, resume=saved[2], checkpoints=saved)
    last = train(dataset, "kind", hp, resume=saved[5], checkpoints=saved)
    assert [r.epoch for r in last.reports] == [6]
    assert_same_result(last.result, whole.result)
    # Every checkpoint the interrupted attempts left is the uninterrupted run's.
    for epoch, data in saved.items():
        mine, theirs = Checkpoint.from_bytes(data), Checkpoint.from_bytes(whole.checkpoints[epoch])
        assert mine.history == theirs.history and mine.fingerprint == theirs.fingerprint
        assert all(torch.equal(mine.model[n], t) for n, t in theirs.model.items())


def test_resuming_a_run_that_had_stopped_early_trains_no_further(dataset) -> None:
    hp = {"epochs": 200, "patience": 2, "hidden": [32], "lr": 0.05, "dropout": 0.0}
    whole = train(dataset, "kind", hp)
    assert whole.result.metrics["stopped_early"] is True
    last = max(whole.checkpoints)
    resumed = train(dataset, "kind", hp, resume=whole.checkpoints[last])
    assert resumed.reports == []
    assert_same_result(resumed.result, whole.result)
    assert resumed.result.epochs_run == last == whole.result.best_epoch + 2


def numpy_keys() -> np.ndarray:
    state = np.random.get_state()
    assert isinstance(state, tuple)
    return np.array(state[1])


def test_the_callers_rng_states_are_kept(dataset) -> None:
    hp = {"epochs": 3, "patience": 3, "hidden": [8]}
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    python_state, numpy_state, torch_state = random.getstate(), numpy_keys(), torch.get_rng_state()
    run = train(dataset, "kind", hp)
    train(dataset, "kind", hp, resume=run.checkpoints[1])
    assert random.getstate() == python_state
    assert np.array_equal(numpy_keys(), numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_checkpoint_of_other_data_or_options_is_refused(dataset) -> None:
    hp = {"epochs": 3, "patience": 3, "hidden": [8]}
    checkpoint = train(dataset, "kind", hp).checkpoints[2]
    with pytest.raises(CheckpointError, match="other data or options"):
        train(dataset, "kind", {**hp, "lr": 0.01}, resume=checkpoint)
    profile, columns = dataset
    fewer = {name: values[:200] for name, values in columns.items()}
    with pytest.raises(CheckpointError, match="other data or options"):
        train((profile, fewer), "kind", hp, resume=checkpoint)


def test_unreadable_checkpoints_are_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (marker.touch, ())

    buffer = io.BytesIO()
    torch.save({"format": 1, "epoch": Payload()}, buffer)
    for data in (b"", b"not a checkpoint", buffer.getvalue()):
        with pytest.raises(CheckpointError):
            Checkpoint.from_bytes(data)
    assert not marker.exists()
    buffer = io.BytesIO()
    torch.save({"format": 1, "epoch": 3}, buffer)
    with pytest.raises(CheckpointError, match="incomplete"):
        Checkpoint.from_bytes(buffer.getvalue())
