"""Model architectures that a safetensors artifact's weights are loaded into.

Public API::

    build(name, config) -> torch.nn.Module          # save its state_dict() with safetensors
    available() -> dict[str, dict]                  # name -> JSON-schema-like config schema
    validate_config(name, config) -> dict           # normalised config, or ArchitectureError
    default_signature(name, config) -> Signature | None
    register(name, architecture, replace=False)     # in-process registration (tests, embedding)

Built-ins: ``mlp`` (`inference.architectures.mlp`) and ``cnn`` (`inference.architectures.cnn`).
Operators add more through the ``torchwire.architectures`` entry point group; see
`inference.architectures.registry` for what an entry point may name.

Preparing an artifact::

    module = build("mlp", {"in_features": 4, "hidden": [16], "out_features": 2})
    ...train...
    safetensors.torch.save_file(module.state_dict(), "model.safetensors")
"""

from inference.architectures.registry import (
    ENTRY_POINT_GROUP,
    Architecture,
    available,
    build,
    default_signature,
    register,
    unregister,
    validate_config,
)
from inference.errors import ArchitectureError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Architecture",
    "ArchitectureError",
    "available",
    "build",
    "default_signature",
    "register",
    "unregister",
    "validate_config",
]
