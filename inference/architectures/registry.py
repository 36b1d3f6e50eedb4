"""The architecture registry: built-ins plus plugins from the `torchwire.architectures` entry points.

A plugin entry point may name either

- a callable ``fn(config: dict) -> nn.Module`` (its config is accepted as-is), or
- an object with ``build(config) -> nn.Module`` and optionally ``schema`` (a dict, or a callable
  returning one, in the subset `inference.architectures.schema` understands) and
  ``signature(config) -> Signature | None``.

Plugins are imported on first need (a lookup of a non-built-in name, or `available()`), once per
process. One that fails to import or has the wrong shape is logged and skipped; it never keeps
the built-ins from working. Built-in names cannot be overridden by a plugin.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from inference.architectures import cnn, mlp, tabular_mlp
from inference.architectures.schema import check
from inference.errors import ArchitectureError
from inference.signature import Signature

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "torchwire.architectures"
PERMISSIVE_SCHEMA: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Architecture:
    name: str
    schema: Mapping[str, Any]
    builder: Callable[[dict[str, Any]], nn.Module]
    signer: Callable[[dict[str, Any]], Signature | None] | None = None


_BUILTINS = {
    "mlp": Architecture("mlp", mlp.SCHEMA, mlp.build, mlp.signature),
    "cnn": Architecture("cnn", cnn.SCHEMA, cnn.build, cnn.signature),
    "tabular-mlp": Architecture("tabular-mlp", tabular_mlp.SCHEMA, tabular_mlp.build, tabular_mlp.signature),
}
_registry: dict[str, Architecture] = dict(_BUILTINS)
_plugins_loaded = False
_lock = threading.Lock()


def available() -> dict[str, dict[str, Any]]:
    """Every usable architecture name mapped to (a copy of) its config schema."""
    _load_plugins()
    return {name: copy.deepcopy(dict(arch.schema)) for name, arch in sorted(_registry.items())}


def validate_config(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return `config` normalised (defaults filled in) or raise `ArchitectureError` naming the field."""
    arch = _get(name)
    if not isinstance(config, Mapping):
        raise ArchitectureError(f"{name}: config must be an object", details={"architecture": name, "field": None})
    normalised: dict[str, Any] = check(arch.schema, dict(config), architecture=name)
    return normalised


def build(name: str, config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised module; its `state_dict()` saved with safetensors is a valid artifact."""
    arch = _get(name)
    normalised = validate_config(name, config)
    try:
        module = arch.builder(normalised)
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ArchitectureError(
            f"{name}: building the module failed: {exc}", details={"architecture": name, "field": None}
        ) from exc
    if not isinstance(module, nn.Module):
        raise ArchitectureError(
            f"{name}: builder returned {type(module).__name__}, not a torch.nn.Module",
            details={"architecture": name, "field": None},
        )
    return module


def default_signature(name: str, config: Mapping[str, Any]) -> Signature | None:
    """The signature the architecture implies for `config`, or None if it does not declare one."""
    arch = _get(name)
    if arch.signer is None:
        return None
    return arch.signer(validate_config(name, config))


def register(name: str, architecture: object, *, replace: bool = False) -> None:
    """Add an architecture in-process (same accepted shapes as an entry point value)."""
    if not replace and name in _registry:
        raise ValueError(f"architecture {name!r} is already registered")
    _registry[name] = _adapt(name, architecture)


def unregister(name: str) -> None:
    if name in _BUILTINS:
        raise ValueError(f"built-in architecture {name!r} cannot be removed")
    _registry.pop(name, None)


def _get(name: str) -> Architecture:
    if name not in _registry:
        _load_plugins()
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry))
        raise ArchitectureError(
            f"unknown architecture {name!r}; available: {known}",
            details={"architecture": name, "field": None},
        ) from None


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _lock:
        if _plugins_loaded:
            return
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name in _BUILTINS:
                logger.warning("architecture plugin %r (%s) shadows a built-in; ignored", entry.name, entry.value)
                continue
            try:
                _registry.setdefault(entry.name, _adapt(entry.name, entry.load()))
            except Exception:
                logger.exception("architecture plugin %r (%s) failed to load; skipped", entry.name, entry.value)
        _plugins_loaded = True


def _adapt(name: str, obj: object) -> Architecture:
    build_fn = getattr(obj, "build", None)
    if callable(build_fn):
        schema = getattr(obj, "schema", None)
        if callable(schema):
            schema = schema()
        if schema is None:
            schema = PERMISSIVE_SCHEMA
        if not isinstance(schema, Mapping):
            raise TypeError(f"schema of architecture {name!r} is {type(schema).__name__}, not a dict")
        signer = getattr(obj, "signature", None)
        return Architecture(name, schema, build_fn, signer if callable(signer) else None)
    if callable(obj):
        return Architecture(name, PERMISSIVE_SCHEMA, obj)
    raise TypeError(f"architecture {name!r} is neither callable nor has a build() method")
