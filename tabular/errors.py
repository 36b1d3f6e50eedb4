"""The errors of tabular training, each an `inference.errors.InferenceError` so every edge maps them as it maps
the serving runtime's (a kind and a stable code); the base class is the one piece of `inference` shared here."""

from __future__ import annotations

from typing import Any

from inference.errors import ErrorKind, InferenceError

__all__ = ["CheckpointError", "DatasetError", "TrainingCancelled", "TrainingError"]


class DatasetError(InferenceError):
    """An uploaded file that is not a usable CSV data set; `line` is the 1-based line at fault."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_dataset"

    def __init__(self, message: str, *, line: int | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={**({"line": line} if line is not None else {}), **(details or {})})
        self.line = line


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
