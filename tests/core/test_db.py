"""Which errors mean "the database is unreachable" (503, counted as an outage) and which are bugs (500)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from django.db.utils import IntegrityError, OperationalError
from psycopg_pool import PoolTimeout

from app.core.db import CircuitOpen, DatabaseUnavailable, is_unavailable, unavailable_error


def _wrapped(cause: BaseException, wrapper: type[Exception] = OperationalError) -> Exception:
    """As Django's DatabaseErrorWrapper raises it: its own class, the driver's error as the cause."""
    try:
        raise wrapper(str(cause)) from cause
    except Exception as exc:
        return exc


def _psycopg_error(sqlstate: str | None) -> psycopg.OperationalError:
    error = psycopg.errors.lookup(sqlstate)("boom") if sqlstate else psycopg.OperationalError("connection failed")
    assert isinstance(error, psycopg.OperationalError)
    return error


@pytest.mark.parametrize("cause", [
    _psycopg_error(None),  # refused, reset, closed: no SQLSTATE
    _psycopg_error("08006"),  # connection_failure
    _psycopg_error("57P01"),  # admin_shutdown: a fast shutdown ended the session
    _psycopg_error("57P03"),  # cannot_connect_now: starting up
    _psycopg_error("53300"),  # too_many_connections
    PoolTimeout("couldn't get a connection after 10.00 sec"),
    CircuitOpen("the database is unreachable"),
    psycopg.InterfaceError("the connection is lost"),
])
def test_unreachable_database_errors(cause):
    assert is_unavailable(cause)
    assert is_unavailable(_wrapped(cause))
    answer = unavailable_error(_wrapped(cause))
    assert isinstance(answer, DatabaseUnavailable)
    assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("error", [
    _wrapped(_psycopg_error("40P01")),  # deadlock: a retry of this transaction may succeed, but it is no outage
    _wrapped(_psycopg_error("57014")),  # query_canceled (statement timeout)
    _wrapped(psycopg.errors.UniqueViolation("dup"), IntegrityError),
    _wrapped(sqlite3.OperationalError("database is locked")),
    ValueError("a bug"),
])
def test_query_errors_are_not_an_outage(error):
    assert not is_unavailable(error)
    assert unavailable_error(error) is None
