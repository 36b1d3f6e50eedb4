"""Scoring and formatting predictions of tabular models."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tabular.features import FeaturePipeline

__all__ = ["classification_metrics", "format_predictions", "predict_records", "regression_metrics"]


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


