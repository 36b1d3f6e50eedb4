"""Every exception the inference library raises on purpose.

All derive from `InferenceError`. Each class carries a `kind` (`ErrorKind`: what went wrong, in
no protocol's terms), a stable machine-readable `code` and `details`, a JSON-serialisable dict.
The library never speaks HTTP: each edge of the app maps a kind to its own answer once
(app/core/edges.py: the REST envelope, V2, the websocket).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

# What torch's C++ errors and warnings say about the machine that built or runs them: a C++ backtrace, a
# "(Triggered internally at /pytorch/...)" note, and paths of source files or of this server's files.
_BACKTRACE = re.compile(r"\s*Exception raised from .*", re.DOTALL)
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")
_SOURCE = re.compile(r"\"?(?:[A-Za-z]:)?(?:[/\\][^\s\"'(),:;]+)+\.(?:cpp|cc|cxx|cu|cuh|c|h|hpp|py|pyx)\"?(?::\d+)?")
_PATH = re.compile(r"(?<![\w.])/(?:__w|pytorch|home|root|tmp|var|opt|usr|srv|work|build|builds|private|Users)"
                   r"(?:/[^\s\"'(),:;]+)+")


def public_message(text: str) -> str:
    """``text`` without torch's C++ backtraces, source locations and filesystem paths, which tell a caller
    how the server was built and where it keeps its files. The exception itself, kept as the cause of the
    error this message goes into, still says everything in the server's log."""
    text = _BACKTRACE.sub("", text)
    text = _TRIGGERED.sub("", text)
    text = _SOURCE.sub("<source>", text)
    return _PATH.sub("<path>", text)


class ErrorKind(StrEnum):
    """What kind of failure an error is, for the edge that answers it."""

    INVALID = "invalid"  # the request does not fit the protocol or the model's signature
    UNPROCESSABLE = "unprocessable"  # something the caller defined (architecture, artifact, data set) is unusable
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"  # `QueueFull`: retry after `retry_after_seconds`
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


class InferenceError(Exception):
    """``message`` goes to the caller as it is given, less what `public_message` removes."""

    kind: ErrorKind = ErrorKind.INTERNAL
    code: str = "inference_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        message = public_message(message)
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            **({"details": self.details} if self.details else {}),
        }


class ArchitectureError(InferenceError):
    """Unknown architecture name or a config that does not match its schema."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_architecture"


class SignatureError(InferenceError):
    """A signature definition is itself malformed."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_signature"


class DatatypeError(InferenceError):
    """A datatype name that is unknown or deliberately unsupported (BYTES, BF16)."""

    kind = ErrorKind.INVALID
    code = "unsupported_datatype"


class ArtifactError(InferenceError):
    """An artifact file is unreadable, of a refused kind, or does not match its architecture."""

    kind = ErrorKind.UNPROCESSABLE
    code = "invalid_artifact"


class ArtifactForbidden(ArtifactError):
    """The artifact format executes code when loaded and code artifacts are not allowed here."""

    kind = ErrorKind.FORBIDDEN
    code = "artifact_forbidden"

    def __init__(self, message: str, *, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"reason": reason, **(details or {})})
        self.reason = reason


class InputError(InferenceError):
    """A request input does not satisfy the model signature."""

    kind = ErrorKind.INVALID
    code = "invalid_input"

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(f"input {input_name!r}: {message}", details={"input": input_name})
        self.input_name = input_name
        self.reason = message


class V2Error(InferenceError):
    """A request body that is not a valid Open Inference Protocol (V2) request."""

    kind = ErrorKind.INVALID
    code = "invalid_request"


class DeviceError(InferenceError):
    """The configured device does not exist on this machine."""

    kind = ErrorKind.INTERNAL
    code = "device_unavailable"


class QueueFull(InferenceError):
    """The batcher queue is at capacity; retry after `retry_after_seconds` (a Retry-After header)."""

    kind = ErrorKind.OVERLOADED
    code = "queue_full"

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(
            f"inference queue is full; retry after {retry_after_seconds:.3f}s",
            details={"retry_after_seconds": retry_after_seconds},
        )
        self.retry_after_seconds = retry_after_seconds


class RequestTooLarge(InferenceError):
    """A single request holds more rows than the whole queue may ever hold."""

    kind = ErrorKind.TOO_LARGE
    code = "request_too_large"


class DeadlineExceeded(InferenceError):
    kind = ErrorKind.TIMEOUT
    code = "deadline_exceeded"


class BatchFailed(InferenceError):
    """The forward pass of the batch this request was part of raised."""

    kind = ErrorKind.INTERNAL
    code = "batch_failed"


class ShuttingDown(InferenceError):
    """The model version is draining (shutdown, unload or hot swap) and takes no new work."""

    kind = ErrorKind.UNAVAILABLE
    code = "shutting_down"


class ModelNotFound(InferenceError):
    """Raised by a pool loader (supplied by the app) for an unknown model or version."""

    kind = ErrorKind.NOT_FOUND
    code = "model_not_found"


class ModelLoadError(InferenceError):
    """A known model version could not be loaded or warmed up."""

    kind = ErrorKind.INTERNAL
    code = "model_load_failed"
