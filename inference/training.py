"""Training tabular models: typed CSV columns in; weights and everything serving needs out.

Public API::

    train_tabular(columns, profile, *, target, task, features=None, hyperparameters=None,
                  on_epoch=None, should_cancel=None, on_checkpoint=None, resume=None) -> TrainResult
    split_rows(target_values, *, task, val_fraction, seed) -> (train_rows, val_rows)
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
- The split comes from the seed alone (`split_rows`): stratified per class for classification (each
  class gives its rounded share; a class with one row stays in train), a shuffle for regression.
- Classification labels are strings. Integral numeric targets read ``"3"``, not ``"3.0"``; boolean
  targets use the file's own spellings (`ColumnProfile.bool_labels`). Labels are ordered by value
  (numbers numerically, false before true, strings by code point); output ``i`` is the logit of
  ``labels[i]``.
- Regression trains on the standardised target and folds the scaling back into the last layer, so
  the served output is on the target's scale with no extra step.
- Early stopping keeps the weights of the epoch with the lowest validation loss and stops after
  `patience` epochs without a better one. Metrics are those weights on the validation split, which
  also chose the epoch, so they lean slightly optimistic; there is no third split.
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
import io
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from inference import architectures
from inference.architectures.tabular_mlp import rescale_output
from inference.errors import ErrorKind, InferenceError
from inference.features import FeaturePipeline
from inference.tabular import ColumnKind, ColumnProfile, DatasetProfile

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
CATEGORICAL_TOP_K = 20
# should_cancel may cost a database or Redis round trip; within an epoch ask at most this often.
_CANCEL_POLL_S = 1.0
CHECKPOINT_FORMAT = 1


class TrainingError(InferenceError):
    """Training options or data that cannot work; `field` names the option or column at fault."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_training"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={"field": field})
        self.field = field


class TrainingCancelled(InferenceError):
    """`should_cancel` returned true; `epochs_completed` epochs had finished."""

    kind = ErrorKind.CONFLICT
    code = "training_cancelled"

    def __init__(self, epochs_completed: int) -> None:
        super().__init__(f"training cancelled after {epochs_completed} epochs", details={"epochs": epochs_completed})
        self.epochs_completed = epochs_completed


class CheckpointError(InferenceError):
    """A checkpoint that cannot be read, or one made from other data or options than the run's."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_checkpoint"


@dataclass(frozen=True)
class Hyperparameters:
    """Training options. The defaults are what the service uses; bench/TRAINING.md has how they compare."""

    hidden: tuple[int, ...] = (128, 64)
    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    val_fraction: float = 0.2
    seed: int = 0
    dropout: float = 0.1

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
        return cls(**values)

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
}


@dataclass(frozen=True)
class EpochReport:
    """Sent after every epoch. `eta_s` assumes all `epochs` run; early stopping may end sooner.

    `metric` is validation accuracy (classification) or RMSE on the target's scale (regression).
    Losses are cross-entropy, or the mean squared error of the standardised target.
    """

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    metric_name: str
    metric: float
    elapsed_s: float
    eta_s: float
    best_epoch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Checkpoint:
    """A run after `epoch` epochs: everything ``train_tabular(..., resume=...)`` needs to go on exactly as
    if it had never stopped.

    The model and optimiser state; the RNG states (torch's global one, which drives dropout, the
    shuffling generator, numpy's and Python's global ones); early stopping (best validation loss, its
    epoch and weights; the patience count is ``epoch - best_epoch``); the metric `history`; and `report`,
    the epoch's `EpochReport`, for a caller that has to send it again. `fingerprint` names the data and
    options the run was started with. The tensors are copies, so the run may go on meanwhile.
    """

    epoch: int
    fingerprint: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    best_loss: float
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    report: EpochReport
    elapsed_s: float
    loop_s: float

    def to_bytes(self) -> bytes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["report"] = self.report.to_dict()
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, **data}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Reads `to_bytes` output with torch's weights-only unpickler, so a tampered file runs no code;
        anything else raises `CheckpointError`."""
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"unreadable checkpoint: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a training checkpoint of a known format")
        try:
            values = {f.name: raw[f.name] for f in fields(cls)}
            values["report"] = EpochReport(**raw["report"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"incomplete checkpoint: {exc}") from exc
        return cls(**values)


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
    train_rows, val_rows = split_rows(target_values, task=checked_task, val_fraction=hp.val_fraction, seed=hp.seed)
    kept = len(train_rows) + len(val_rows)
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
        y_all = np.array([-1 if _missing(v) else slot[_label(v, target_profile)] for v in target_values], np.int64)
    else:
        y_all = np.array([math.nan if _missing(v) else float(v) for v in target_values], np.float64)

    train_columns = _take(columns, chosen, train_rows)
    pipeline = FeaturePipeline.fit(
        train_columns, {name: profile.column(name).kind for name in chosen}, top_k=CATEGORICAL_TOP_K
    )
    x_train = torch.from_numpy(pipeline.transform_columns(train_columns))
    x_val = torch.from_numpy(pipeline.transform_columns(_take(columns, chosen, val_rows)))
    y_train_raw, y_val_raw = y_all[train_rows], y_all[val_rows]

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

    with _seeded_rngs(hp.seed):
        module = architectures.build(ARCHITECTURE, config)
        run = _fit(
            module,
            (x_train, y_train),
            (x_val, y_val),
            hp,
            loss_fn,
            "accuracy" if checked_task == "classification" else "rmse",
            metric,
            _Hooks(on_epoch, should_cancel, on_checkpoint, fingerprint),
            started,
            resume,
        )

    module.load_state_dict(run.best_state)
    module.eval()
    with torch.no_grad():
        if checked_task == "classification":
            probabilities = torch.softmax(module(x_val), dim=1).double().numpy()
            task_metrics = classification_metrics(y_val_raw, probabilities)
        else:
            rescale_output(module, scale, shift)
            task_metrics = regression_metrics(y_val_raw, module(x_val)[:, 0].double().numpy())

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


def split_rows(
    target_values: Sequence[Any], *, task: str, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices (into `target_values`) of the train and validation splits `train_tabular` uses.

    Rows with a missing target are in neither. Exposed so that a comparison can train other models
    on exactly the same rows.
    """
    present = [i for i, v in enumerate(target_values) if not _missing(v)]
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


def predict_records(
    module: nn.Module,
    pipeline: FeaturePipeline,
    labels: Sequence[str],
    task: str,
    records: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Predictions for raw JSON records, in their order; `InputError` names a bad column.

    Runs the forward pass on the calling thread, on the module's device, and puts the module in
    eval mode.
    """
    x = pipeline.transform_records(records)
    if not len(x):
        return []
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    module.eval()
    with torch.inference_mode():
        outputs = module(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return format_predictions(outputs, labels, task)


def format_predictions(outputs: np.ndarray, labels: Sequence[str], task: str) -> list[dict[str, Any]]:
    """Model outputs ``[N, out_features]`` as ``{"label", "probabilities"}`` or ``{"value"}`` per row."""
    if task == "regression":
        return [{"value": float(v)} for v in outputs[:, 0]]
    logits = outputs.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return [
        {
            "label": labels[int(row.argmax())],
            "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
        }
        for row in probabilities
    ]


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 (over classes in truth or prediction); ROC AUC too with two classes.

    `y_true` holds class indices; `probabilities` is ``[N, classes]``. ROC AUC is left out when
    the rows hold a single class.
    """
    y_pred = probabilities.argmax(axis=1)
    f1s = []
    for c in np.union1d(y_true, y_pred):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    out = {"accuracy": float(np.mean(y_pred == y_true)), "macro_f1": float(np.mean(f1s))}
    if probabilities.shape[1] == 2:
        auc = _roc_auc(y_true == 1, probabilities[:, 1])
        if auc is not None:
            out["roc_auc"] = auc
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (1 for a perfect fit of a constant target, 0 for an imperfect one)."""
    error = y_pred - y_true
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else (1.0 if ss_res == 0 else 0.0)
    return {"rmse": math.sqrt(float(np.mean(error**2))), "mae": float(np.mean(np.abs(error))), "r2": r2}


def _roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney U / (positives * negatives), tied scores sharing their average rank."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2
    ranks = average_rank[inverse.reshape(-1)]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
        _restore_rngs(resume.rng, generator)
        history = copy.deepcopy(resume.history)
        best_loss, best_epoch, epoch = resume.best_loss, resume.best_epoch, resume.epoch
        best_state = _copy_state(resume.best_state)
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
            best_state = _copy_state(module.state_dict())
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
                    model=_copy_state(module.state_dict()),
                    optimizer=copy.deepcopy(optimizer.state_dict()),
                    rng=_rng_states(generator),
                    best_loss=best_loss,
                    best_epoch=best_epoch,
                    best_state=_copy_state(best_state),
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


@contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seeds the global RNGs of torch, numpy and Python for a run and gives the caller's back after it."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def _rng_states(generator: torch.Generator) -> dict[str, Any]:
    """In types torch's weights-only loader accepts (no numpy arrays)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": [version, list(internal), gauss_next],
    }


def _restore_rngs(state: Mapping[str, Any], generator: torch.Generator) -> None:
    try:
        torch.set_rng_state(state["torch"])
        generator.set_state(state["shuffle"])
        numpy = state["numpy"]
        keys = numpy["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint's RNG states are unusable: {exc}") from exc


def _copy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


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
    distinct = {v for v in values if not _missing(v)}
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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _take(columns: Mapping[str, Sequence[Any]], names: Sequence[str], rows: np.ndarray) -> dict[str, list[Any]]:
    return {name: [columns[name][i] for i in rows.tolist()] for name in names}


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
