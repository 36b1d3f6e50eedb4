"""Training tabular models: typed CSV columns in; weights and everything serving needs out.

Public API::

    train_tabular(columns, profile, *, target, task, features=None, hyperparameters=None,
                  on_epoch=None, should_cancel=None, on_checkpoint=None, resume=None) -> TrainResult
    split_rows(target_values, *, task, val_fraction, seed, test_fraction) -> Split(train, val, test)
    predict_records(module, pipeline, labels, task, records) -> list[dict]
    format_predictions(outputs, labels, task) -> list[dict]
    Hyperparameters.from_dict(data), EpochReport, TrainResult
    Checkpoint (.to_bytes(), Checkpoint.from_bytes(data)), CheckpointError
    classification_metrics(y_true, probabilities), regression_metrics(y_true, y_pred)
    TrainingError (422, names the field), TrainingCancelled

What a worker does::

    profile = tabular.profile_csv(path)
    columns = tabular.read_columns(path, profile, [*features, target])
    result = train_tabular(columns, profile, target=target, task="classification", on_epoch=publish)
    safetensors.torch.save_file(result.state_dict, "model.safetensors")   # tabular-mlp weights
    metadata = result.to_dict()                                            # JSON: the rest

Decisions a caller cannot see from the signatures:

- Rows whose target is missing are dropped before the split and counted in
  ``metrics["dropped_rows"]``: there is nothing to learn from or score against in them.
- The split comes from the seed alone (`tabular.split`): train / validation / test, stratified per class
  for classification (each class gives its rounded shares; a class with one row stays in train), a
  shuffle for regression. The feature pipeline is fitted on train rows only.
- Classification labels are strings. Integral numeric targets read ``"3"``, not ``"3.0"``; boolean
  targets use the file's own spellings (`ColumnProfile.bool_labels`). Labels are ordered by value
  (numbers numerically, false before true, strings by code point); output ``i`` is the logit of
  ``labels[i]``.
- Regression trains on the standardised target and folds the scaling back into the last layer, so
  the served output is on the target's scale with no extra step.
- Early stopping keeps the weights of the epoch with the lowest validation loss and stops after
  `patience` epochs without a better one. The metrics are those weights scored once on the test
  split, which chose nothing (``metrics["scored_on"] == "test"``); ``metrics["val_metric"]`` is the
  chosen epoch's validation metric. With ``test_fraction=0`` (or too few rows for a test row) the
  metrics are the validation split's and ``scored_on`` says ``"validation"``: optimistic.
- Same columns, options and seed give bit-identical weights on CPU at the same torch thread count.
  The global RNGs of torch, numpy and Python are seeded for the run and given back to the caller
  afterwards, so the caller's RNG states are kept.
- Resuming: `on_checkpoint` gets a `Checkpoint` after every epoch (before `on_epoch` hears of it), and
  ``train_tabular(..., resume=checkpoint)`` with the same columns and options continues after its
  epoch with the same result, bit for bit at the same thread count, as a run that never stopped. Only
  the timings (`elapsed_s`, `eta_s`, ``metrics["train_seconds"]``) differ. A checkpoint of other data or
  options raises `CheckpointError` rather than being applied.
- torch runs with the caller's thread settings; nothing here changes them.

`train_tabular` blocks for the whole run: call it from a worker thread or process, not an event loop.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

# The one dependency on the serving runtime: the trained module must be the architecture serving builds.
from inference import architectures
from inference.architectures.tabular_mlp import rescale_output
from tabular.checkpoint import Checkpoint, EpochReport, copy_state, restore_rngs, rng_states, seeded_rngs
from tabular.errors import CheckpointError, TrainingCancelled, TrainingError
from tabular.features import FeaturePipeline
from tabular.metrics import classification_metrics, format_predictions, predict_records, regression_metrics
from tabular.options import Hyperparameters
from tabular.profiling import ColumnKind, ColumnProfile, DatasetProfile
from tabular.split import split_rows
from tabular.values import is_missing

__all__ = [
    "ARCHITECTURE",
    "Checkpoint",
    "CheckpointError",
    "EpochReport",
    "Hyperparameters",
    "TrainResult",
    "TrainingCancelled",
    "TrainingError",
    "classification_metrics",
    "format_predictions",
    "predict_records",
    "regression_metrics",
    "split_rows",
    "train_tabular",
]

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
ARCHITECTURE = "tabular-mlp"
MIN_ROWS = 10
MAX_CLASSES = 1000
# should_cancel may cost a database or Redis round trip; within an epoch ask at most this often.
_CANCEL_POLL_S = 1.0


@dataclass
class TrainResult:
    """A trained model. `state_dict` loads into ``architectures.build(architecture, config)``;
    everything else is JSON-serialisable and returned by `to_dict`."""

    state_dict: dict[str, torch.Tensor]
    architecture: str
    config: dict[str, Any]
    pipeline: dict[str, Any]
    task: Task
    target: str
    features: list[str]
    labels: list[str]
    metrics: dict[str, Any]
    reference_stats: dict[str, dict[str, Any]]
    signature: dict[str, Any]
    hyperparameters: dict[str, Any]
    epochs_run: int
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "state_dict"}


def train_tabular(
    columns: Mapping[str, Sequence[Any]],
    profile: DatasetProfile,
    *,
    target: str,
    task: str,
    features: Sequence[str] | None = None,
    hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    resume: Checkpoint | None = None,
) -> TrainResult:
    """Train a ``tabular-mlp`` on typed `columns` (as `tabular.read_columns` returns them).

    `features` defaults to every profiled column except `target`. `on_epoch`, `on_checkpoint` and
    `should_cancel` run on the calling thread; an exception from any ends training and propagates.
    `resume` continues the run a `Checkpoint` was taken from (same columns and options); epochs up to
    its own are not run again, nor reported.
    """
    started = time.monotonic()
    hp = hyperparameters if isinstance(hyperparameters, Hyperparameters) else Hyperparameters.from_dict(hyperparameters)
    if task not in TASKS:
        raise TrainingError("task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    checked_task: Task = "classification" if task == "classification" else "regression"
    target_profile = _profiled(profile, target, "target")
    chosen = _features(profile, target, features)
    for name in (*chosen, target):
        if name not in columns:
            raise TrainingError("columns", f"column {name!r} was not read")
    total = len(columns[target])
    if any(len(columns[name]) != total for name in chosen):
        raise TrainingError("columns", "columns differ in length")
    if checked_task == "regression" and target_profile.kind is not ColumnKind.NUMERIC:
        raise TrainingError("target", f"regression needs a numeric target; {target!r} is {target_profile.kind}")

    target_values = columns[target]
    train_rows, val_rows, test_rows = split_rows(
        target_values, task=checked_task, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction, seed=hp.seed
    )
    kept = len(train_rows) + len(val_rows) + len(test_rows)
    if kept < MIN_ROWS:
        raise TrainingError("target", f"only {kept} rows have a target; at least {MIN_ROWS} are needed")

    labels: list[str] = []
    if checked_task == "classification":
        labels = _ordered_labels(target_values, target_profile)
        if len(labels) < 2:
            raise TrainingError("target", f"{target!r} has a single class; classification needs at least two")
        if len(labels) > MAX_CLASSES:
            raise TrainingError(
                "target", f"{target!r} has {len(labels)} distinct values; at most {MAX_CLASSES} classes (regression?)"
            )
        slot = {label: i for i, label in enumerate(labels)}
        y_all = np.array([-1 if is_missing(v) else slot[_label(v, target_profile)] for v in target_values], np.int64)
    else:
        y_all = np.array([math.nan if is_missing(v) else float(v) for v in target_values], np.float64)

    train_columns = _take(columns, chosen, train_rows)
    pipeline = FeaturePipeline.fit(
        train_columns,
        {name: profile.column(name).kind for name in chosen},
        min_count=hp.min_count,
        onehot_max=hp.onehot_max,
        max_categories=hp.max_categories,
    )
    x_train = torch.from_numpy(pipeline.transform_columns(train_columns))
    x_val = torch.from_numpy(pipeline.transform_columns(_take(columns, chosen, val_rows)))
    # No test rows (test_fraction 0, or too few rows): the validation rows are scored, and say so.
    scored_rows = test_rows if len(test_rows) else val_rows
    x_scored = torch.from_numpy(pipeline.transform_columns(_take(columns, chosen, scored_rows)))
    y_train_raw, y_val_raw, y_scored_raw = y_all[train_rows], y_all[val_rows], y_all[scored_rows]

    loss_fn: nn.Module
    shift, scale = 0.0, 1.0
    if checked_task == "classification":
        loss_fn = nn.CrossEntropyLoss()
        y_train, y_val = torch.from_numpy(y_train_raw), torch.from_numpy(y_val_raw)
        out_features = len(labels)
    else:
        loss_fn = nn.MSELoss()
        shift = float(y_train_raw.mean())
        scale = float(y_train_raw.std()) or 1.0
        y_train = torch.from_numpy(((y_train_raw - shift) / scale).astype(np.float32)).unsqueeze(1)
        y_val = torch.from_numpy(((y_val_raw - shift) / scale).astype(np.float32)).unsqueeze(1)
        out_features = 1

    config = architectures.validate_config(
        ARCHITECTURE,
        {
            "in_features": pipeline.n_features,
            "hidden": list(hp.hidden),
            "out_features": out_features,
            "dropout": hp.dropout,
            "embeddings": pipeline.embeddings,
        },
    )

    def metric(outputs: torch.Tensor) -> float:
        if checked_task == "classification":
            return float((outputs.argmax(1) == y_val).float().mean())
        return float(torch.sqrt(torch.mean((outputs - y_val) ** 2))) * scale

    fingerprint = ""
    if resume is not None or on_checkpoint is not None:
        fingerprint = _fingerprint(hp, config, (x_train, y_train, x_val, y_val))
    if resume is not None and resume.fingerprint != fingerprint:
        raise CheckpointError("the checkpoint was made from other data or options than this run's")

    metric_name = "accuracy" if checked_task == "classification" else "rmse"
    with seeded_rngs(hp.seed):
        module = architectures.build(ARCHITECTURE, config)
        run = _fit(
            module,
            (x_train, y_train),
            (x_val, y_val),
            hp,
            loss_fn,
            metric_name,
            metric,
            _Hooks(on_epoch, should_cancel, on_checkpoint, fingerprint),
            started,
            resume,
        )

    module.load_state_dict(run.best_state)
    module.eval()
    with torch.no_grad():
        if checked_task == "classification":
            probabilities = torch.softmax(module(x_scored), dim=1).double().numpy()
            task_metrics = classification_metrics(y_scored_raw, probabilities)
        else:
            rescale_output(module, scale, shift)
            task_metrics = regression_metrics(y_scored_raw, module(x_scored)[:, 0].double().numpy())

    best = run.history[run.best_epoch - 1]
    metrics: dict[str, Any] = {
        **task_metrics,
        "val_loss": best["val_loss"],
        "train_loss": best["train_loss"],
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.history),
        "stopped_early": len(run.history) < hp.epochs,
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "test_rows": len(test_rows),
        "scored_on": "test" if len(test_rows) else "validation",
        "val_metric": best[metric_name],
        "dropped_rows": total - kept,
        "train_seconds": run.resumed_s + time.monotonic() - started,
    }
    signature = architectures.default_signature(ARCHITECTURE, config)
    assert signature is not None
    return TrainResult(
        state_dict={k: v.detach().clone().contiguous() for k, v in module.state_dict().items()},
        architecture=ARCHITECTURE,
        config=config,
        pipeline=pipeline.to_dict(),
        task=checked_task,
        target=target,
        features=list(chosen),
        labels=labels,
        metrics=metrics,
        reference_stats=pipeline.reference_stats(train_columns),
        signature=signature.to_dict(),
        hyperparameters=hp.to_dict(),
        epochs_run=len(run.history),
        best_epoch=run.best_epoch,
        history=run.history,
    )


@dataclass
class _Run:
    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    resumed_s: float


@dataclass
class _Hooks:
    on_epoch: Callable[[EpochReport], None] | None
    should_cancel: Callable[[], bool] | None
    on_checkpoint: Callable[[Checkpoint], None] | None
    fingerprint: str


def _fit(
    module: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    hp: Hyperparameters,
    loss_fn: nn.Module,
    metric_name: str,
    metric: Callable[[torch.Tensor], float],
    hooks: _Hooks,
    started: float,
    resume: Checkpoint | None,
) -> _Run:
    """Runs inside `_seeded_rngs`: a resumed run puts the checkpoint's global RNG states in place."""
    x_train, y_train = train
    x_val, y_val = val
    should_cancel = hooks.should_cancel
    optimizer = torch.optim.AdamW(module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    generator = torch.Generator().manual_seed(hp.seed)
    rows = len(x_train)
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, epoch = math.inf, 0, 0
    best_state: dict[str, torch.Tensor] = {}
    elapsed_before = loop_before = 0.0
    if resume is not None:
        module.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        restore_rngs(resume.rng, generator)
        history = copy.deepcopy(resume.history)
        best_loss, best_epoch, epoch = resume.best_loss, resume.best_epoch, resume.epoch
        best_state = copy_state(resume.best_state)
        elapsed_before, loop_before = resume.elapsed_s, resume.loop_s
    loop_started = time.monotonic()
    # Early stopping: `patience` epochs without a better validation loss. Checked before each epoch
    # rather than after, so a run resumed from the epoch that met it runs no further.
    while epoch < hp.epochs and epoch - best_epoch < hp.patience:
        epoch += 1
        if should_cancel is not None and should_cancel():
            raise TrainingCancelled(epoch - 1)
        polled = time.monotonic()
        module.train()
        total = 0.0
        order = torch.randperm(rows, generator=generator)
        for start in range(0, rows, hp.batch_size):
            batch = order[start : start + hp.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            if should_cancel is not None and time.monotonic() - polled > _CANCEL_POLL_S:
                if should_cancel():
                    raise TrainingCancelled(epoch - 1)
                polled = time.monotonic()
        train_loss = total / rows
        if not math.isfinite(train_loss):
            raise TrainingError("lr", f"training diverged at epoch {epoch} (loss {train_loss}); try a lower lr")
        module.eval()
        with torch.no_grad():
            outputs = module(x_val)
            val_loss = float(loss_fn(outputs, y_val))
            score = metric(outputs)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy_state(module.state_dict())
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, metric_name: score})
        now = time.monotonic()
        loop_s = loop_before + now - loop_started
        report = EpochReport(
            epoch=epoch,
            epochs=hp.epochs,
            train_loss=train_loss,
            val_loss=val_loss,
            metric_name=metric_name,
            metric=score,
            elapsed_s=elapsed_before + now - started,
            eta_s=loop_s / epoch * (hp.epochs - epoch),
            best_epoch=best_epoch,
        )
        if hooks.on_checkpoint is not None:
            hooks.on_checkpoint(
                Checkpoint(
                    epoch=epoch,
                    fingerprint=hooks.fingerprint,
                    model=copy_state(module.state_dict()),
                    optimizer=copy.deepcopy(optimizer.state_dict()),
                    rng=rng_states(generator),
                    best_loss=best_loss,
                    best_epoch=best_epoch,
                    best_state=copy_state(best_state),
                    history=copy.deepcopy(history),
                    report=report,
                    elapsed_s=report.elapsed_s,
                    loop_s=loop_s,
                )
            )
        if hooks.on_epoch is not None:
            hooks.on_epoch(report)
    if not best_state:
        raise TrainingError("lr", "the validation loss was never finite; try a lower lr")
    return _Run(history, best_epoch, best_state, elapsed_before)


def _fingerprint(hp: Hyperparameters, config: Mapping[str, Any], tensors: Sequence[torch.Tensor]) -> str:
    """Names the data and options of a run, so a checkpoint is never applied to another."""
    digest = hashlib.sha256(json.dumps({"hp": hp.to_dict(), "config": config}, sort_keys=True).encode())
    for tensor in tensors:
        array = np.ascontiguousarray(tensor.numpy())
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def _profiled(profile: DatasetProfile, name: str, field_name: str) -> ColumnProfile:
    if not isinstance(name, str) or name not in profile.names:
        raise TrainingError(field_name, f"unknown column {name!r}")
    return profile.column(name)


def _features(profile: DatasetProfile, target: str, features: Sequence[str] | None) -> list[str]:
    if features is None:
        chosen = [n for n in profile.names if n != target]
    else:
        if isinstance(features, str) or not isinstance(features, Sequence):
            raise TrainingError("features", "must be a list of column names")
        chosen = list(features)
        for name in chosen:
            _profiled(profile, name, "features")
        if target in chosen:
            raise TrainingError("features", f"the target {target!r} cannot also be a feature")
        if len(set(chosen)) != len(chosen):
            raise TrainingError("features", "lists a column twice")
    if not chosen:
        raise TrainingError("features", "at least one feature column is needed")
    return chosen


def _ordered_labels(values: Sequence[Any], column: ColumnProfile) -> list[str]:
    distinct = {v for v in values if not is_missing(v)}
    if column.kind is ColumnKind.BOOLEAN:
        false, true = column.bool_labels
        return [label for flag, label in ((False, false), (True, true)) if flag in distinct]
    if column.kind is ColumnKind.NUMERIC:
        return [_label(v, column) for v in sorted(float(v) for v in distinct)]
    return sorted(str(v) for v in distinct)


def _label(value: Any, column: ColumnProfile) -> str:
    if column.kind is ColumnKind.BOOLEAN:
        return column.bool_labels[int(bool(value))]
    if column.kind is ColumnKind.NUMERIC:
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    return str(value)


def _take(columns: Mapping[str, Sequence[Any]], names: Sequence[str], rows: np.ndarray) -> dict[str, list[Any]]:
    return {name: [columns[name][i] for i in rows.tolist()] for name in names}


