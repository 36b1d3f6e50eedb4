"""Blob storage for artifacts, datasets and job outputs: local files or S3 (aioboto3).

Keys are relative POSIX paths. Every write reports the object's sha256 and size, computed while the
bytes stream through, so callers can record them and verify on every later read.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

CHUNK = 1024 * 1024


class StorageError(Exception):
    pass


class ObjectTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object exceeds the limit of {limit} bytes")
        self.limit = limit


class ObjectNotFound(StorageError):
    pass


class StorageFull(StorageError):
    """The storage has no space (ENOSPC) or the quota is spent (EDQUOT). Nothing of the object was kept."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"storage is full ({reason}); {key!r} was not stored")
        self.key = key
        self.reason = reason


_FULL = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT"}


@contextmanager
def _full_is_storage_full(key: str) -> Iterator[None]:
    """Turns running out of space into StorageFull, which the API answers 507 and jobs report plainly."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(key, _FULL[exc.errno]) from exc
        raise


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


# Segments of letters, digits, '.', '_' and '-' joined by '/', matched whole: no control character,
# space, backslash or empty segment ever reaches a path or an S3 key.
KEY_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


def _clean_key(key: str) -> str:
    # Split the raw string: PurePosixPath would quietly fold "./a" and "a/." into other keys.
    if not isinstance(key, str) or KEY_RE.fullmatch(key) is None or any(p in (".", "..") for p in key.split("/")):
        raise StorageError(f"invalid storage key {key!r}")
    return key


def is_valid_key(key: str) -> bool:
    try:
        _clean_key(key)
    except StorageError:
        return False
    return True


class Storage(Protocol):
    url: str

    async def save(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> StoredObject:
        """Streams ``chunks`` to ``key``; past ``max_bytes`` it raises ObjectTooLarge and keeps nothing."""
        ...

    async def save_file(self, key: str, path: Path) -> StoredObject: ...

    async def download(self, key: str, dest: Path) -> StoredObject:
        """Copies the object to the local file ``dest`` and returns its measured sha256 and size."""
        ...

    def stream(self, key: str) -> AsyncIterator[bytes]: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def check(self) -> None:
        """Raises when the storage cannot be written (readiness)."""
        ...

    def listing(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        """(key, last-modified epoch seconds) of every object under ``prefix`` (for the orphan sweep)."""
        ...


async def _spool(chunks: AsyncIterable[bytes], max_bytes: int | None, directory: Path | None,
                 key: str) -> tuple[Path, int, str]:
    """Writes chunks to a temporary file, hashing as it goes; removes the file on any failure."""
    with _full_is_storage_full(key):
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=directory)
    tmp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with _full_is_storage_full(key), os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLarge(max_bytes)
                digest.update(chunk)
                await asyncio.to_thread(fh.write, chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink on the failure path
        raise
    return tmp, size, digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    async def save(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> StoredObject:
        dest = self._path(key)
        with _full_is_storage_full(key):
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        tmp, size, sha = await _spool(chunks, max_bytes, dest.parent, key)
        await asyncio.to_thread(os.replace, tmp, dest)
        return StoredObject(key=key, size=size, sha256=sha)

    async def save_file(self, key: str, path: Path) -> StoredObject:
        dest = self._path(key)

        def copy() -> tuple[int, str]:
            # A partial copy stays under a dot-name (never listed, never at ``dest``) and is removed on failure.
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
            try:
                with _full_is_storage_full(key):
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, tmp)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return _hash_file(dest)

        size, sha = await asyncio.to_thread(copy)
        return StoredObject(key=key, size=size, sha256=sha)

    async def download(self, key: str, dest: Path) -> StoredObject:
        src = self._path(key)

        def copy() -> tuple[int, str]:
            if not src.is_file():
                raise ObjectNotFound(key)
            if src.resolve() != dest.resolve():
                shutil.copyfile(src, dest)
            return _hash_file(dest)

        size, sha = await asyncio.to_thread(copy)
        return StoredObject(key=key, size=size, sha256=sha)

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        src = self._path(key)
        try:
            fh = await asyncio.to_thread(src.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        try:
            while block := await asyncio.to_thread(fh.read, CHUNK):
                yield block
        finally:
            fh.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def unlink() -> None:
            # As on S3, deleting a prefix is a no-op rather than an error.
            if not path.is_dir():
                path.unlink(missing_ok=True)

        await asyncio.to_thread(unlink)

    async def check(self) -> None:
        def probe() -> None:
            with _full_is_storage_full(".ready"):
                self.root.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                    pass

        await asyncio.to_thread(probe)

    async def listing(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root

        def walk() -> list[tuple[str, float]]:
            if not base.exists():
                return []
            return [(p.relative_to(self.root).as_posix(), p.stat().st_mtime)
                    for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]

        for item in await asyncio.to_thread(walk):
            yield item


class S3Storage:
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None, region: str) -> None:
        import aioboto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.url = f"s3://{bucket}/{self.prefix}"
        self._session = aioboto3.Session()

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _client(self) -> Any:
        return self._session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)

    async def save(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> StoredObject:
        s3_key = self._key(key)
        tmp, size, sha = await _spool(chunks, max_bytes, None, key)
        try:
            async with self._client() as s3:
                await s3.upload_file(str(tmp), self.bucket, s3_key, ExtraArgs={"Metadata": {"sha256": sha}})
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(key=key, size=size, sha256=sha)

    async def save_file(self, key: str, path: Path) -> StoredObject:
        s3_key = self._key(key)
        size, sha = await asyncio.to_thread(_hash_file, path)
        async with self._client() as s3:
            await s3.upload_file(str(path), self.bucket, s3_key, ExtraArgs={"Metadata": {"sha256": sha}})
        return StoredObject(key=key, size=size, sha256=sha)

    async def download(self, key: str, dest: Path) -> StoredObject:
        from botocore.exceptions import ClientError

        s3_key = self._key(key)
        # download_file opens its target before it asks S3, so a missing key or a broken transfer would
        # truncate ``dest``; download beside it and move into place only once complete.
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
        try:
            async with self._client() as s3:
                try:
                    await s3.download_file(self.bucket, s3_key, str(tmp))
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                        raise ObjectNotFound(key) from exc
                    raise
            size, sha = await asyncio.to_thread(_hash_file, tmp)
            await asyncio.to_thread(os.replace, tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(key=key, size=size, sha256=sha)

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        async with self._client() as s3:
            try:
                obj = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise ObjectNotFound(key) from exc
                raise
            # Not ``async with obj["Body"] as body``: that binds the raw aiohttp response, whose read()
            # takes no size.
            body = obj["Body"]
            async with body:
                while chunk := await body.read(CHUNK):
                    yield chunk

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        async with self._client() as s3:
            try:
                await s3.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    async def delete(self, key: str) -> None:
        async with self._client() as s3:
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def check(self) -> None:
        async with self._client() as s3:
            await s3.head_bucket(Bucket=self.bucket)

    async def listing(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        full = self._key(prefix.strip("/")) if prefix.strip("/") else self.prefix
        strip = f"{self.prefix}/" if self.prefix else ""
        async with self._client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(strip):], obj["LastModified"].timestamp()


def storage_from_url(url: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> Storage:
    parts = urlsplit(url)
    if parts.scheme == "file":
        raw = unquote(parts.netloc + parts.path)
        return LocalStorage(Path(raw).resolve())
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageError("STORAGE_URL s3:// needs a bucket: s3://bucket/prefix")
        return S3Storage(parts.netloc, parts.path, endpoint_url=endpoint_url, region=region)
    raise StorageError(f"STORAGE_URL scheme {parts.scheme!r} is not supported (use file:// or s3://)")


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    from django.conf import settings

    return storage_from_url(settings.STORAGE_URL, endpoint_url=settings.AWS_ENDPOINT_URL, region=settings.AWS_REGION)
