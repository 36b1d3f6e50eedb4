"""app/core/storage.py: the same behaviour from LocalStorage and from S3Storage against a real moto server."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator

import pytest

from app.core.storage import (
    CHUNK,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    Storage,
    StorageError,
    storage_from_url,
)
from tests.s3 import REGION, MotoS3

PREFIX = "some/prefix"
BLOB = os.urandom(2 * CHUNK + 12345)


async def chunks(data: bytes, size: int = 300_000) -> AsyncIterator[bytes]:
    yield b""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Backend:
    """A storage under test plus a view of everything it left behind, whatever the backend."""

    def __init__(self, storage: Storage, leftovers) -> None:
        self.storage = storage
        self.leftovers = leftovers


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch) -> Backend:
    # S3Storage spools uploads through the default temporary directory; point it somewhere we can look.
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    if request.param == "local":
        root = tmp_path / "root"
        root.mkdir()

        def local_files() -> list[str]:
            found = [p for base in (root, spool) for p in base.rglob("*") if not p.is_dir()]
            return sorted(str(p.relative_to(tmp_path)) for p in found)

        return Backend(LocalStorage(root), local_files)

    s3: MotoS3 = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")

    def s3_objects() -> list[str]:
        return sorted(s3.objects(bucket)) + sorted(str(p.relative_to(tmp_path)) for p in spool.rglob("*"))

    return Backend(S3Storage(bucket, PREFIX, endpoint_url=s3.endpoint_url, region=REGION), s3_objects)


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([block async for block in storage.stream(key)])


async def test_save_reports_sha256_and_size(backend):
    stored = await backend.storage.save("models/a/blob.bin", chunks(BLOB))
    assert (stored.key, stored.size, stored.sha256) == ("models/a/blob.bin", len(BLOB), sha(BLOB))
    empty = await backend.storage.save("empty", chunks(b""))
    assert (empty.size, empty.sha256) == (0, sha(b""))
    assert await read_all(backend.storage, "empty") == b""


async def test_stream_and_download_return_the_saved_bytes(backend, tmp_path):
    await backend.storage.save("models/a/blob.bin", chunks(BLOB))
    assert await read_all(backend.storage, "models/a/blob.bin") == BLOB
    dest = tmp_path / "downloaded.bin"
    got = await backend.storage.download("models/a/blob.bin", dest)
    assert dest.read_bytes() == BLOB
    assert (got.size, got.sha256) == (len(BLOB), sha(BLOB))


async def test_save_file_and_overwrite(backend, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(BLOB)
    stored = await backend.storage.save_file("k/file.bin", source)
    assert (stored.size, stored.sha256) == (len(BLOB), sha(BLOB))
    await backend.storage.save("k/file.bin", chunks(b"replaced"))
    assert await read_all(backend.storage, "k/file.bin") == b"replaced"


async def test_exists_and_delete(backend):
    assert not await backend.storage.exists("d/x")
    await backend.storage.save("d/x", chunks(b"x"))
    assert await backend.storage.exists("d/x")
    # A prefix is not an object, and deleting it leaves the objects under it alone.
    assert not await backend.storage.exists("d")
    await backend.storage.delete("d")
    assert await backend.storage.exists("d/x")
    await backend.storage.delete("d/x")
    assert not await backend.storage.exists("d/x")
    await backend.storage.delete("d/x")  # deleting what is gone is not an error
    assert backend.leftovers() == []


@pytest.mark.parametrize("limit", [0, len(BLOB) - 1, CHUNK])
async def test_too_large_keeps_nothing(backend, limit):
    with pytest.raises(ObjectTooLarge) as info:
        await backend.storage.save("big/blob.bin", chunks(BLOB), max_bytes=limit)
    assert info.value.limit == limit
    assert not await backend.storage.exists("big/blob.bin")
    assert backend.leftovers() == []


async def test_too_large_leaves_an_existing_object_intact(backend):
    await backend.storage.save("keep", chunks(b"original"))
    with pytest.raises(ObjectTooLarge):
        await backend.storage.save("keep", chunks(BLOB), max_bytes=100)
    assert await read_all(backend.storage, "keep") == b"original"


async def test_exactly_max_bytes_is_accepted(backend):
    stored = await backend.storage.save("fits", chunks(BLOB), max_bytes=len(BLOB))
    assert stored.size == len(BLOB)


async def test_failing_upload_keeps_nothing(backend):
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await backend.storage.save("half", broken())
    assert not await backend.storage.exists("half")
    assert backend.leftovers() == []


INVALID_KEYS = ["../x", "a/../../x", "/abs", "a//b", "", "./a", "a/./b", "a/", "."]


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_refused(backend, key, tmp_path):
    with pytest.raises(StorageError, match="invalid storage key"):
        await backend.storage.save(key, chunks(b"x"))
    with pytest.raises(StorageError, match="invalid storage key"):
        await backend.storage.exists(key)
    with pytest.raises(StorageError, match="invalid storage key"):
        await backend.storage.delete(key)
    with pytest.raises(StorageError, match="invalid storage key"):
        await backend.storage.download(key, tmp_path / "out")
    with pytest.raises(StorageError, match="invalid storage key"):
        await read_all(backend.storage, key)
    assert backend.leftovers() == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["missing", "d"])
async def test_missing_objects_raise_not_found(backend, key, tmp_path):
    await backend.storage.save("d/x", chunks(b"x"))
    dest = tmp_path / "dest"
    dest.write_bytes(b"untouched")
    with pytest.raises(ObjectNotFound):
        await backend.storage.download(key, dest)
    assert dest.read_bytes() == b"untouched"
    fresh = tmp_path / "fresh"
    with pytest.raises(ObjectNotFound):
        await backend.storage.download(key, fresh)
    assert not fresh.exists()
    with pytest.raises(ObjectNotFound):
        await read_all(backend.storage, key)


async def test_check_passes(backend):
    await backend.storage.check()
    assert backend.leftovers() == []


async def test_local_check_fails_when_root_is_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        await LocalStorage(blocker / "root").check()


async def test_s3_check_fails_on_a_missing_bucket(s3_server, s3_bucket):
    storage = S3Storage(f"{s3_bucket}-missing", "p", endpoint_url=s3_server.endpoint_url, region=REGION)
    with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
        await storage.check()


async def test_s3_objects_live_under_the_prefix(s3_server, s3_bucket):
    storage = S3Storage(s3_bucket, f"/{PREFIX}/", endpoint_url=s3_server.endpoint_url, region=REGION)
    assert storage.url == f"s3://{s3_bucket}/{PREFIX}"
    await storage.save("models/m/a.bin", chunks(b"abc"))
    assert s3_server.objects(s3_bucket) == {f"{PREFIX}/models/m/a.bin": 3}
    bare = S3Storage(s3_bucket, "", endpoint_url=s3_server.endpoint_url, region=REGION)
    assert not await bare.exists("models/m/a.bin")
    assert await bare.exists(f"{PREFIX}/models/m/a.bin")
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"{PREFIX}/models/m/a.bin")
    assert head["Metadata"]["sha256"] == sha(b"abc")


def test_storage_from_url_file(tmp_path):
    storage = storage_from_url(f"file://{tmp_path}/store")
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "store"
    spaced = storage_from_url(f"file://{tmp_path}/with%20space")
    assert isinstance(spaced, LocalStorage) and spaced.root == tmp_path / "with space"


def test_storage_from_url_s3():
    storage = storage_from_url("s3://bucket/artifacts/v1/", endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.endpoint_url, storage.region) == (
        "bucket", "artifacts/v1", "http://127.0.0.1:9", "eu-west-1")
    assert storage.url == "s3://bucket/artifacts/v1"
    bare = storage_from_url("s3://bucket")
    assert isinstance(bare, S3Storage) and bare.prefix == ""


@pytest.mark.parametrize("url", ["s3:///prefix", "http://host/x", "gs://bucket/p", "/just/a/path", "", "ftp://x"])
def test_storage_from_url_rejects_others(url):
    with pytest.raises(StorageError):
        storage_from_url(url)

