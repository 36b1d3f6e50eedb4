"""Raw JSON records for models trained by Torchwire: the version's stored feature pipeline turns them
into the engineered tensor (exactly as at training time), and outputs become labels or values."""

from __future__ import annotations

from typing import Any

import numpy as np

from inference.errors import InputError
from tabular.features import FeaturePipeline
from tabular.training import format_predictions

from .runtime import Target

# Versions are immutable, so a version's pipeline is built once per process.
_pipelines: dict[tuple[int, int], FeaturePipeline] = {}


def is_records(inputs: Any) -> bool:
    # The first row decides cheaply for tensors (a list of lists); records need every row checked.
    return isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], dict) and all(
        isinstance(r, dict) for r in inputs)


def records_to_inputs(target: Target, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    pipeline_data = target.extras.get("pipeline")
    if not isinstance(pipeline_data, dict):
        raise InputError("inputs", "this model takes tensors, not records; send a nested list of numbers")
    key = (target.model.id, target.version)
    pipeline = _pipelines.get(key)
    if pipeline is None:
        pipeline = _pipelines[key] = FeaturePipeline.from_dict(pipeline_data)
    features = pipeline.transform_records(records)
    return {target.signature.inputs[0].name: np.asarray(features, dtype=np.float32)}


def outputs_to_records(target: Target, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    values = outputs[target.signature.outputs[0].name]
    raw_labels = target.extras.get("labels")
    labels = [str(label) for label in raw_labels] if isinstance(raw_labels, list) else []
    task = str(target.extras.get("task") or "regression")
    return format_predictions(values, labels, task)
