"""Backups: a consistent database dump plus a manifest of every stored object the database names, written
to the storage under ``backups/<UTC timestamp>/``; restore into an empty database, verified by sha256.

Only the database is copied. Artifacts, datasets and job outputs stay where they are (the storage is
their durable home: keep S3 versioning or replication on it) and the manifest records the sha256 and
size of each, read in the same snapshot as the dump, so a restore can prove that every object the
restored rows point at is still there and intact. Blocking: run from a management command.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from django.db import connection, transaction

from app.core.storage import ObjectNotFound, Storage, get_storage
from app.datasets.models import Dataset
from app.jobs.models import Job
from app.registry.models import MlModel, ModelVersion

FORMAT = 1
ROOT = "backups"
DUMP_NAME = "database.dump"
MANIFEST_NAME = "manifest.json"
STAMP = "%Y%m%dT%H%M%SZ"
VERIFY_CONCURRENCY = 8
# libpq reads these from the environment; the password never goes on a command line.
_LIBPQ_OPTIONS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "connect_timeout",
                  "application_name", "options", "target_session_attrs", "passfile", "service"}


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class StoredEntry:
    kind: str  # artifact | dataset | job_output
    ref: str  # what points at it, for people: "model iris version 2"
    key: str
    sha256: str
    size: int | None


@dataclass(frozen=True)
class Mismatch:
    entry: StoredEntry
    problem: str

    def __str__(self) -> str:
        return f"{self.entry.key} ({self.entry.ref}): {self.problem}"


@dataclass(frozen=True)
class RestoreResult:
    prefix: str
    objects: int
    mismatches: list[Mismatch]


class _Cursor(Protocol):
    def execute(self, sql: str, /) -> object: ...

    def fetchall(self) -> list[Any]: ...


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _stored_entries(cursor: _Cursor) -> list[StoredEntry]:
    """Every storage object the database names, read with ``cursor`` (plain SQL, so it runs on the
    backup's own snapshot: a psycopg cursor in the exported transaction, or sqlite3 on the copy)."""
    entries = []
    cursor.execute(f"SELECT m.name, v.number, v.artifact_key, v.artifact_sha256, v.artifact_size "  # noqa: S608
                   f"FROM {ModelVersion._meta.db_table} v JOIN {MlModel._meta.db_table} m ON m.id = v.model_id "
                   f"ORDER BY m.name, v.number")
    for name, number, key, sha, size in cursor.fetchall():
        entries.append(StoredEntry("artifact", f"model {name} version {number}", key, sha, int(size)))
    cursor.execute(f"SELECT id, name, storage_key, sha256, size_bytes FROM {Dataset._meta.db_table} "  # noqa: S608
                   f"ORDER BY id")
    for pk, name, key, sha, size in cursor.fetchall():
        entries.append(StoredEntry("dataset", f"dataset {pk} ({name})", key, sha, int(size)))
    cursor.execute(f"SELECT id, output_key, result FROM {Job._meta.db_table} "  # noqa: S608
                   f"WHERE output_key <> '' ORDER BY id")
    for pk, key, result in cursor.fetchall():
        sha = (_json(result) or {}).get("sha256") or ""
        entries.append(StoredEntry("job_output", f"job {pk} output", key, sha, None))
    return entries


def _applied_migrations(cursor: _Cursor) -> dict[str, str]:
    cursor.execute("SELECT app, name FROM django_migrations ORDER BY id")
    return {app: name for app, name in cursor.fetchall()}


# PostgreSQL

def _pg_command_env() -> tuple[str, dict[str, str]]:
    """``--dbname`` conninfo and environment for pg_dump/pg_restore against the current database."""
    from psycopg.conninfo import make_conninfo

    settings = connection.settings_dict
    params: dict[str, Any] = {"dbname": settings["NAME"]}
    for name, key in (("host", "HOST"), ("port", "PORT"), ("user", "USER")):
        if settings.get(key):
            params[name] = str(settings[key])
    for name, value in settings.get("OPTIONS", {}).items():
        if name in _LIBPQ_OPTIONS and isinstance(value, str | int):
            params[name] = str(value)
    env = dict(os.environ)
    if settings.get("PASSWORD"):
        env["PGPASSWORD"] = settings["PASSWORD"]
    return make_conninfo(**params), env


def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BackupError(f"{argv[0]} is not installed (it comes with the PostgreSQL client tools)") from exc
    if result.returncode != 0:
        raise BackupError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _pg_dump(dest: Path) -> tuple[list[StoredEntry], dict[str, str]]:
    """Dumps the database and lists its objects from one snapshot: this transaction exports it, reads
    the manifest in it and stays open while pg_dump imports it."""
    conninfo, env = _pg_command_env()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cursor.fetchone()
        entries = _stored_entries(cursor)
        migrations = _applied_migrations(cursor)
        _run(["pg_dump", "--format=custom", "--no-password", f"--snapshot={snapshot}", f"--file={dest}",
              f"--dbname={conninfo}"], env)
    return entries, migrations


def _pg_is_empty() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        )
        (count,) = cursor.fetchone()
    return int(count) == 0


def _pg_restore(dump: Path) -> None:
    conninfo, env = _pg_command_env()
    connection.close()
    _run(["pg_restore", "--no-password", "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction",
          f"--dbname={conninfo}", str(dump)], env)


# SQLite

def _sqlite_path() -> Path:
    return Path(connection.settings_dict["NAME"])


def _sqlite_read_only(path: Path) -> sqlite3.Connection:
    # as_uri() percent-encodes what a file: URI cannot hold as is ("?", "#", "%", spaces).
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def _sqlite_dump(dest: Path) -> tuple[list[StoredEntry], dict[str, str]]:
    """sqlite3's online backup gives a consistent copy; the manifest is read from the copy itself."""
    source = _sqlite_read_only(_sqlite_path())
    copy = sqlite3.connect(dest)
    try:
        source.backup(copy)
        cursor = copy.cursor()
        return _stored_entries(cursor), _applied_migrations(cursor)
    finally:
        copy.close()
        source.close()


def _sqlite_is_empty() -> bool:
    path = _sqlite_path()
    if not path.exists() or path.stat().st_size == 0:
        return True
    db = _sqlite_read_only(path)
    try:
        (count,) = db.execute("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                              ).fetchone()
    finally:
        db.close()
    return int(count) == 0


def _sqlite_restore(dump: Path) -> None:
    connection.close()
    path = _sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _sqlite_read_only(dump)
    target = sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _engine() -> str:
    if connection.vendor not in ("postgresql", "sqlite"):
        raise BackupError(f"backups support PostgreSQL and SQLite, not {connection.vendor}")
    return str(connection.vendor)


# Storage

async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _hash_object(storage: Storage, key: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in storage.stream(key):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


async def _verify(storage: Storage, entries: list[StoredEntry]) -> list[Mismatch]:
    slots = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def check(entry: StoredEntry) -> Mismatch | None:
        async with slots:
            try:
                size, sha = await _hash_object(storage, entry.key)
            except ObjectNotFound:
                return Mismatch(entry, "missing from the storage")
        if sha != entry.sha256:
            return Mismatch(entry, f"sha256 is {sha}, expected {entry.sha256}")
        if entry.size is not None and size != entry.size:
            return Mismatch(entry, f"size is {size} bytes, expected {entry.size}")
        return None

    found = await asyncio.gather(*(check(entry) for entry in entries))
    return [mismatch for mismatch in found if mismatch is not None]


def backup_verify_objects(*, entries: list[StoredEntry], storage: Storage | None = None) -> list[Mismatch]:
    """Downloads and hashes every object; what is missing or differs from its manifest entry."""
    return asyncio.run(_verify(storage or get_storage(), entries))


@contextmanager
def _scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tw-backup-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _version() -> str:
    try:
        return metadata.version("torchwire")
    except metadata.PackageNotFoundError:
        return "unknown"


def backup_create(*, storage: Storage | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Writes ``database.dump`` then ``manifest.json`` (last, so a manifest means a complete backup)
    under ``backups/<UTC timestamp>/``; returns the manifest. Job outputs whose row has no recorded
    sha256 are hashed from the storage."""
    storage = storage or get_storage()
    engine = _engine()
    created, prefix = _free_prefix(storage, now)
    with _scratch() as scratch:
        dump = scratch / DUMP_NAME
        entries, migrations = _pg_dump(dump) if engine == "postgresql" else _sqlite_dump(dump)
        stored = asyncio.run(storage.save_file(f"{prefix}/{DUMP_NAME}", dump))
    entries = [_with_hash(storage, entry) for entry in entries]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "torchwire_version": _version(),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "prefix": prefix,
        "storage": storage.url,
        "database": {"engine": engine, "key": stored.key, "sha256": stored.sha256, "size": stored.size,
                     "migrations": migrations},
        "counts": {kind: sum(1 for e in entries if e.kind == kind) for kind in ("artifact", "dataset", "job_output")},
        "objects": [asdict(entry) for entry in entries],
    }
    body = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
    asyncio.run(storage.save(f"{prefix}/{MANIFEST_NAME}", _one_chunk(body)))
    return manifest


def _free_prefix(storage: Storage, now: datetime | None) -> tuple[datetime, str]:
    """The stamp of ``now``; stamps have whole seconds, so a second backup within one waits for the next."""
    for _ in range(3):
        created = (now or datetime.now(UTC)).astimezone(UTC)
        prefix = f"{ROOT}/{created.strftime(STAMP)}"
        if not asyncio.run(storage.exists(f"{prefix}/{MANIFEST_NAME}")):
            return created, prefix
        if now is not None:
            break
        time.sleep(1.0 - created.microsecond / 1e6)
    raise BackupError(f"{prefix} already exists")


def _with_hash(storage: Storage, entry: StoredEntry) -> StoredEntry:
    if entry.sha256:
        return entry
    try:
        size, sha = asyncio.run(_hash_object(storage, entry.key))
    except ObjectNotFound as exc:
        raise BackupError(f"{entry.ref} names {entry.key}, which is not in the storage") from exc
    return StoredEntry(entry.kind, entry.ref, entry.key, sha, size)


def backup_resolve(*, name: str, storage: Storage | None = None) -> str:
    """The prefix of a backup given as ``backups/<stamp>[/]``, ``<stamp>`` or ``latest``."""
    storage = storage or get_storage()
    if name == "latest":
        async def stamps() -> list[str]:
            found = []
            async for key, _ in storage.listing(f"{ROOT}/"):
                parts = key.split("/")
                if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                    found.append(parts[1])
            return found

        found = asyncio.run(stamps())
        if not found:
            raise BackupError(f"no backups under {ROOT}/ in {storage.url}")
        return f"{ROOT}/{max(found)}"
    stamp = name.strip("/").removeprefix(f"{ROOT}/")
    try:
        datetime.strptime(stamp, STAMP)
    except ValueError as exc:
        raise BackupError(f"{name!r} is not a backup: give backups/<YYYYmmddTHHMMSSZ>, the stamp, or latest") from exc
    return f"{ROOT}/{stamp}"


def backup_load(*, prefix: str, storage: Storage | None = None) -> dict[str, Any]:
    storage = storage or get_storage()

    async def read() -> bytes:
        return b"".join([chunk async for chunk in storage.stream(f"{prefix}/{MANIFEST_NAME}")])

    try:
        manifest: dict[str, Any] = json.loads(asyncio.run(read()))
    except ObjectNotFound as exc:
        raise BackupError(f"no {MANIFEST_NAME} under {prefix} in {storage.url}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{prefix}: manifest format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def _entries(manifest: dict[str, Any]) -> list[StoredEntry]:
    return [StoredEntry(**item) for item in manifest["objects"]]


def backup_restore(*, name: str, storage: Storage | None = None,
                   ignore_mismatches: bool = False) -> RestoreResult:
    """Restores backup ``name`` into the current database, which must be empty.

    Order: the manifest, the empty-target check, the dump (its sha256), then every object it lists
    (downloaded and hashed). Only then is the database written, so a failed check leaves the target
    empty; ``ignore_mismatches`` restores anyway and returns the mismatches. Last, the restored rows
    are checked against the manifest."""
    storage = storage or get_storage()
    engine = _engine()
    prefix = backup_resolve(name=name, storage=storage)
    manifest = backup_load(prefix=prefix, storage=storage)
    database = manifest["database"]
    if database["engine"] != engine:
        raise BackupError(f"{prefix} holds a {database['engine']} dump; DATABASE_URL is {engine}")
    if not (_pg_is_empty() if engine == "postgresql" else _sqlite_is_empty()):
        raise BackupError(f"the target database {connection.settings_dict['NAME']!r} is not empty: restore into a "
                          "new, empty database (created, not migrated)")
    entries = _entries(manifest)
    with _scratch() as scratch:
        dump = scratch / DUMP_NAME
        try:
            got = asyncio.run(storage.download(database["key"], dump))
        except ObjectNotFound as exc:
            raise BackupError(f"{database['key']} is missing from the storage") from exc
        if got.sha256 != database["sha256"]:
            raise BackupError(f"{database['key']}: sha256 is {got.sha256}, the manifest says {database['sha256']}")
        mismatches = backup_verify_objects(entries=entries, storage=storage)
        if mismatches and not ignore_mismatches:
            raise BackupError(f"{len(mismatches)} of {len(entries)} stored objects fail verification; the database "
                              "was not restored:\n" + "\n".join(f"  {m}" for m in mismatches))
        if engine == "postgresql":
            _pg_restore(dump)
        else:
            _sqlite_restore(dump)
    _check_restored(entries)
    return RestoreResult(prefix=prefix, objects=len(entries), mismatches=mismatches)


def _check_restored(entries: list[StoredEntry]) -> None:
    with connection.cursor() as cursor:
        restored = _stored_entries(cursor)
    connection.close()
    expected = {(e.kind, e.key, e.sha256) for e in entries}
    # A job output hashed at backup time has a sha256 that its row lacks.
    hashed = {e.key: e.sha256 for e in entries}
    have = {(e.kind, e.key, e.sha256 or hashed.get(e.key, "")) for e in restored}
    if have != expected:
        raise BackupError(f"the restored database does not match the manifest: {len(have ^ expected)} objects differ")
