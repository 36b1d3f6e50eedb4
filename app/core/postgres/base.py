"""Django's PostgreSQL backend with the process's outage breaker (`app.core.db.outage`) in front of
every new connection: ``ENGINE = "app.core.postgres"`` (settings.py picks it for postgres:// URLs).

- A connection attempt that fails (the pool's background attempts included, through the pool's
  ``connection_class``) opens the breaker; while it is open a new connection fails at once with
  `app.core.db.CircuitOpen` instead of waiting out the pool's timeout.
- Stale pooled connections (the server restarted, or ended them) are found by the pool's check on
  checkout, and the first one found drains the pool's idle connections: they went down together, and
  psycopg_pool would otherwise check them one by one with a growing pause between failures (1, 2, 4 s),
  so a pool of a few dead connections outlasted its 10 s timeout. New connections take their place.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

from app.core.db import outage


class ReportingConnection(psycopg.Connection[Any]):
    """The pool's connection class: tells the breaker whether connecting works."""

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> ReportingConnection:
        try:
            conn = super().connect(*args, **kwargs)
        except psycopg.OperationalError as exc:
            outage.connect_failed(exc)
            raise
        return conn


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """The pool's check on checkout: a dead connection drains the pool's idle ones as well."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        pool = getattr(conn, "_pool", None)  # set by the pool before it checks a connection it hands out
        if isinstance(pool, ConnectionPool):
            pool.drain()
        raise


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """Django's pool (built as django/db/backends/postgresql/base.py builds it), with this module's
        check and connection class: Django always passes its own ``check``, so options cannot."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        pools: dict[str, ConnectionPool[Any]] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True
            pool: ConnectionPool[Any] = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,  # type: ignore[attr-defined]
                check=check_connection,
                connection_class=ReportingConnection,
                **({} if options is True else options),
            )
            pools.setdefault(self.alias, pool)
        return pools[self.alias]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        outage.check()
        try:
            return super().get_new_connection(conn_params)
        except psycopg.OperationalError as exc:
            if not getattr(self, "pool", None):  # with a pool, the connection class has reported it
                outage.connect_failed(exc)
            raise
