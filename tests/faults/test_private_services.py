"""The private servers fault tests rely on really go down and come back on the same port with their data."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.private_services import migrate, private_postgres, private_redis

pytestmark = pytest.mark.faults


def test_private_postgres_restart_keeps_data_and_port():
    with private_postgres() as pg:
        url = pg.create_database("faults_probe").replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (7)")
        pg.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
        pg.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == (7,)
        pg.kill()
        pg.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == (7,)


def test_private_postgres_takes_the_project_migrations():
    with private_postgres() as pg:
        url = pg.create_database("faults_migrate")
        migrate(url)
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
            row = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
            assert row is not None and row[0] > 0


@pytest.mark.parametrize("appendonly", [False, True])
def test_private_redis_restart(appendonly):
    with private_redis(appendonly=appendonly) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        if appendonly:
            client.execute_command("CONFIG", "SET", "appendfsync", "always")
            client.set("k2", "v2")
        server.stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()
        server.start()
        assert (client.get("k2") == b"v2") is appendonly
