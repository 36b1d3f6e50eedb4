"""The base of every JSON request body of the API."""

from __future__ import annotations

from ninja import Schema
from pydantic import ConfigDict


class Input(Schema):
    """A request body read as its JSON types say: ``true`` is no number and ``"5"`` no integer, as the OpenAPI
    document states (pydantic's lax mode would take both). A field JSON can only carry as text, like a UUID,
    relaxes it with ``Field(strict=False)``."""

    model_config = ConfigDict(strict=True)
