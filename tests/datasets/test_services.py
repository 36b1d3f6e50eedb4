"""app/datasets services and selectors, called directly: an upload is profiled before it is stored, and
only its owner (or an admin) sees it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from app.accounts.models import Role
from app.core.errors import Forbidden, Invalid, NotFound
from app.datasets import services
from app.datasets.models import Dataset
from app.datasets.selectors import dataset_get, dataset_list
from app.datasets.services import dataset_delete, dataset_name_clean, dataset_upload
from tests.service_support import new_user

pytestmark = pytest.mark.django_db

CSV = b"x,city,y\n1.5,Oslo,1\n2.5,Paris,0\n3.5,Oslo,1\n"


def storage_root() -> Path:
    return Path(os.environ["STORAGE_URL"].removeprefix("file://"))


def stored_files(owner_id: int) -> set[str]:
    folder = storage_root() / "datasets" / str(owner_id)
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def upload(owner, content: bytes, tmp_path: Path, name: str = "data.csv") -> Dataset:
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    # async_to_sync from a sync test: the service's sync_to_async calls run on this thread, so they see
    # this test's transaction.
    return async_to_sync(dataset_upload)(owner=owner, name=name, path=path)


def test_an_upload_is_profiled_stored_and_recorded(tmp_path):
    owner = new_user()
    dataset = upload(owner, CSV, tmp_path, name="sales\x00\n.csv")
    assert dataset.name == "sales.csv"
    assert (dataset.row_count, dataset.size_bytes, dataset.sha256) == (3, len(CSV), hashlib.sha256(CSV).hexdigest())
    kinds = {c["name"]: c["kind"] for c in dataset.profile["columns"]}
    assert (kinds["x"], kinds["city"]) == ("numeric", "categorical") and set(kinds) == {"x", "city", "y"}
    assert dataset.storage_key.startswith(f"datasets/{owner.pk}/")
    assert (storage_root() / dataset.storage_key).read_bytes() == CSV
    assert Dataset.objects.get(pk=dataset.pk).owner_id == owner.pk


def test_a_file_that_fails_profiling_is_refused_and_nothing_is_stored(tmp_path):
    owner = new_user()
    for content, message in ((b"", "empty"), (b"a,b\n", "no data rows"), (b'a,b\n"1,2\n', "never closed")):
        with pytest.raises(Invalid, match=message):
            upload(owner, content, tmp_path)
    assert not Dataset.objects.filter(owner=owner).exists()
    assert stored_files(owner.pk) == set()


def test_a_viewer_cannot_upload(tmp_path):
    viewer = new_user(Role.VIEWER)
    with pytest.raises(Forbidden):
        upload(viewer, CSV, tmp_path)
    assert stored_files(viewer.pk) == set()


def test_the_stored_bytes_go_again_when_the_row_cannot_be_written(tmp_path, monkeypatch):
    owner = new_user()

    def refuse(**kwargs):
        raise RuntimeError("the database refused the row")

    monkeypatch.setattr(services, "_dataset_create", refuse)
    with pytest.raises(RuntimeError):
        upload(owner, CSV, tmp_path)
    assert stored_files(owner.pk) == set()


def test_names_keep_printable_characters_only():
    assert dataset_name_clean("  a\tb\u200b.csv ") == "ab.csv"
    assert dataset_name_clean("\x00\x01") == "dataset.csv"
    assert len(dataset_name_clean("x" * 300)) == 255


def test_only_the_owner_or_an_admin_sees_a_dataset(tmp_path):
    owner, other, admin = new_user(), new_user(), new_user(Role.ADMIN)
    dataset = upload(owner, CSV, tmp_path)
    assert dataset_get(user=owner, dataset_id=dataset.pk).pk == dataset.pk
    assert dataset_get(user=admin, dataset_id=dataset.pk).pk == dataset.pk
    with pytest.raises(NotFound) as as_other:
        dataset_get(user=other, dataset_id=dataset.pk)
    with pytest.raises(NotFound) as missing:
        dataset_get(user=other, dataset_id=dataset.pk + 10_000)
    assert str(as_other.value).replace(str(dataset.pk), "N") == str(missing.value).replace(
        str(dataset.pk + 10_000), "N"), "another user's dataset reads as one that does not exist"
    assert dataset.pk in {d.pk for d in dataset_list(user=admin)}
    assert dataset.pk not in {d.pk for d in dataset_list(user=other)}
    assert [d.pk for d in dataset_list(user=owner)] == [dataset.pk]


def test_delete_removes_the_row_and_then_the_bytes(tmp_path):
    owner = new_user()
    dataset = upload(owner, CSV, tmp_path)
    path = storage_root() / dataset.storage_key
    assert path.exists()
    async_to_sync(dataset_delete)(dataset=dataset)
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not path.exists()
