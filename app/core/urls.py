"""Parsing of the service URLs the settings take from the environment (DATABASE_URL, STORAGE_URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class ConfigError(ValueError):
    pass


def database_from_url(url: str, *, base_dir: Path) -> dict[str, Any]:
    """Django DATABASES entry for a ``postgres://`` or ``sqlite:///`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql", "pgsql"):
        options: dict[str, Any] = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
        }
    if scheme == "sqlite":
        raw = unquote(parts.path)
        if parts.netloc:
            raw = parts.netloc + raw
        # sqlite:////abs/path (the usual spelling of an absolute path) leaves "//abs/path", which POSIX
        # paths keep as is; as a name it breaks file: URIs (sqlite3 reads "abs" as their authority).
        path = Path("/" + raw.lstrip("/")) if raw.startswith("/") else base_dir / raw
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": {}}
    raise ConfigError(f"DATABASE_URL scheme {scheme!r} is not supported (use postgres:// or sqlite:///)")
