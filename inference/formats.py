"""Artifact formats: recognise, validate and load model files without trusting them.

Formats:

- ``safetensors`` (default, safe): raw tensors plus a JSON header, loaded into
  ``architectures.build(architecture, config)``. Nothing in the file can run code.
- ``torchscript`` and ``torch_export`` (.pt2): the file carries a program that runs when loaded.
  They are refused with `ArtifactForbidden` unless the caller passes ``allow_code=True``, which the
  app should derive from the ``TORCHWIRE_ALLOW_CODE_ARTIFACTS`` setting.

Every entry point first identifies the file from its bytes (`sniff`) and refuses Python pickles
and ``torch.save`` checkpoints before anything parses them: the file must positively look like
the claimed format. Only then does a library touch it (safetensors reads the header only).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from inference import architectures
from inference.errors import ArtifactError, ArtifactForbidden

__all__ = [
    "ALLOW_CODE_SETTING",
    "CODE_FORMATS",
    "FORMATS",
    "ArtifactError",
    "ArtifactForbidden",
    "ArtifactInfo",
    "TensorInfo",
    "expected_tensors",
    "load_module",
    "sha256_file",
    "sniff",
    "validate_artifact",
]

FORMATS = ("safetensors", "torchscript", "torch_export")
CODE_FORMATS = frozenset({"torchscript", "torch_export"})
ALLOW_CODE_SETTING = "TORCHWIRE_ALLOW_CODE_ARTIFACTS"

# A safetensors header larger than this is not a model header; refusing it bounds what we parse.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ArtifactInfo:
    format: str
    size_bytes: int
    # Header of a safetensors artifact (name -> dtype/shape); None for code formats.
    tensors: dict[str, TensorInfo] | None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sniff(path: str | os.PathLike[str]) -> str:
    """What the file is, judged from its bytes only.

    One of ``safetensors``, ``torchscript``, ``torch_export``, ``pickle`` (a raw pickle stream,
    which includes legacy ``torch.save`` files), ``torch_save`` (a zip checkpoint from
    ``torch.save``, whose ``data.pkl`` is a pickle), ``zip`` (some other zip) or ``unknown``.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    # Safetensors first: its 8-byte little-endian header length can itself start with 0x80 0x02..0x05
    # (a header of 0x280 bytes, say), which would otherwise read as a pickle's protocol opcode. A
    # plausible length followed by '{' cannot be a pickle, whose third byte is an opcode, never '{'.
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    return "unknown"


def _sniff_zip(path: str | os.PathLike[str]) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            prefixes = {n.split("/", 1)[0] for n in names}
            if len(prefixes) != 1:
                return "zip"
            root = prefixes.pop()
            entries = {n.split("/", 1)[1] for n in names if "/" in n}
            if "archive_format" in entries and any(e.startswith("models/") for e in entries):
                with archive.open(f"{root}/archive_format") as marker:  # bounded: entries can be zip bombs
                    if marker.read(16).strip() == b"pt2":
                        return "torch_export"
            if "data.pkl" in entries:
                is_script = "constants.pkl" in entries and any(e.startswith("code/") for e in entries)
                return "torchscript" if is_script else "torch_save"
    except Exception:  # a zip we cannot read (corrupt, encrypted, odd compression) is no known format
        return "zip"
    return "zip"


def validate_artifact(
    path: str | os.PathLike[str],
    fmt: str,
    *,
    architecture: str | None = None,
    config: Mapping[str, Any] | None = None,
    allow_code: bool,
) -> ArtifactInfo:
    """Check an artifact before it is stored or loaded; nothing in it is executed or unpickled.

    For ``safetensors`` the header must list exactly the tensors of
    ``architectures.build(architecture, config).state_dict()``, with the same shapes and dtypes;
    `ArtifactError.details` lists the keys that are missing, unexpected, or of the wrong shape or
    dtype. Code formats are only checked structurally: loading one is what runs its code.
    """
    if fmt not in FORMATS:
        raise ArtifactError(
            f"unsupported artifact format {fmt!r}; supported: {', '.join(FORMATS)}", details={"format": fmt}
        )
    try:
        kind = sniff(path)
        size = os.path.getsize(path)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact: {exc.strerror or exc}") from exc
    if kind in ("pickle", "torch_save"):
        raise ArtifactError(
            "the file is a Python pickle (torch.save checkpoint); pickles run code when loaded and are "
            "never accepted. Save the state_dict with safetensors.torch.save_file instead.",
            details={"format": fmt, "detected": kind},
        )
    if fmt in CODE_FORMATS and not allow_code:
        raise ArtifactForbidden(
            f"{fmt} artifacts are disabled on this server",
            reason=(
                f"{fmt} artifacts run code embedded in the file when loaded; an operator must set "
                f"{ALLOW_CODE_SETTING}=1 to accept them, and only when every uploader is trusted"
            ),
            details={"format": fmt},
        )
    if kind != fmt:
        raise ArtifactError(
            f"the file is not a valid {fmt} artifact (detected: {kind})",
            details={"format": fmt, "detected": kind},
        )
    if fmt != "safetensors":
        return ArtifactInfo(format=fmt, size_bytes=size, tensors=None)
    if architecture is None or config is None:
        raise ArtifactError("a safetensors artifact needs an architecture and its config", details={"format": fmt})
    tensors = _read_safetensors_header(path)
    _compare(tensors, expected_tensors(architecture, config))
    return ArtifactInfo(format=fmt, size_bytes=size, tensors=tensors)


def load_module(
    path: str | os.PathLike[str],
    fmt: str,
    architecture: str | None,
    config: Mapping[str, Any] | None,
    device: torch.device | str,
    *,
    allow_code: bool = False,
) -> nn.Module:
    """Validate, then load the artifact onto `device` with gradients off.

    Blocking (file I/O and possibly a host-to-device copy): call it off the event loop. Eager
    modules are put in eval mode. A ``torch_export`` program has its train/eval behaviour fixed
    when it was exported (export it from a module in eval mode); torch refuses ``.eval()`` on it.
    """
    validate_artifact(path, fmt, architecture=architecture, config=config, allow_code=allow_code)
    device = torch.device(device)
    try:
        if fmt == "safetensors":
            assert architecture is not None and config is not None
            module = architectures.build(architecture, config)
            state = safetensors.torch.load_file(os.fspath(path), device="cpu")
            module.load_state_dict(state, strict=True)
            module.to(device).eval()
        elif fmt == "torchscript":
            module = torch.jit.load(os.fspath(path), map_location=device)
            module.eval()
        else:
            module = torch.export.load(os.fspath(path)).module().to(device)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"loading the {fmt} artifact failed: {exc}", details={"format": fmt}) from exc
    # Per parameter: ScriptModule refuses Module.requires_grad_.
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    try:
        # safe_open parses the JSON header and checks the offsets against the file size; it
        # memory-maps the data without reading it.
        with safetensors.safe_open(os.fspath(path), framework="pt") as f:
            tensors = {}
            for key in f.keys():
                view = f.get_slice(key)
                tensors[key] = TensorInfo(dtype=str(view.get_dtype()), shape=tuple(view.get_shape()))
            return tensors
    except (safetensors.SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"invalid safetensors file: {exc}", details={"format": "safetensors"}) from exc


def expected_tensors(architecture: str, config: Mapping[str, Any]) -> dict[str, TensorInfo]:
    """The tensors (name -> safetensors dtype and shape) a valid artifact of ``architecture`` holds: the
    truth `validate_artifact` compares uploads with, also served to browsers that check a file first.
    Raises ArchitectureError for an unknown architecture or an invalid config."""
    architectures.validate_config(architecture, config)
    try:
        # The meta device gives shapes and dtypes without allocating or initialising weights;
        # a plugin that cannot build there is built for real.
        with torch.device("meta"):
            module = architectures.build(architecture, config)
    except Exception:
        module = architectures.build(architecture, config)
    return {
        key: TensorInfo(dtype=_SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)), shape=tuple(t.shape))
        for key, t in module.state_dict().items()
    }


def _compare(actual: dict[str, TensorInfo], expected: dict[str, TensorInfo]) -> None:
    missing = sorted(expected.keys() - actual.keys())
    unexpected = sorted(actual.keys() - expected.keys())
    shapes = [
        {"key": k, "expected": list(expected[k].shape), "actual": list(actual[k].shape)}
        for k in sorted(expected.keys() & actual.keys())
        if expected[k].shape != actual[k].shape
    ]
    dtypes = [
        {"key": k, "expected": expected[k].dtype, "actual": actual[k].dtype}
        for k in sorted(expected.keys() & actual.keys())
        if expected[k].dtype != actual[k].dtype
    ]
    if not (missing or unexpected or shapes or dtypes):
        return
    problems = (
        [f"missing tensor {k!r}" for k in missing]
        + [f"unexpected tensor {k!r}" for k in unexpected]
        + [f"tensor {d['key']!r} has shape {d['actual']}, expected {d['expected']}" for d in shapes]
        + [f"tensor {d['key']!r} has dtype {d['actual']}, expected {d['expected']}" for d in dtypes]
    )
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise ArtifactError(
        f"artifact does not match the architecture: {shown}",
        details={
            "missing": missing,
            "unexpected": unexpected,
            "shape_mismatch": shapes,
            "dtype_mismatch": dtypes,
        },
    )
