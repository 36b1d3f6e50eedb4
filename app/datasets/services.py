"""Dataset uploads: validate and profile the CSV before anything is stored, then store and record it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db import transaction

from app.accounts.models import Role, User
from app.core.errors import Forbidden, Invalid
from app.core.storage import get_storage
from inference.errors import InferenceError
from tabular.profiling import profile_csv

from .models import Dataset


def _dataset_create(*, owner: User, name: str, key: str, sha256: str, size: int, profile: dict) -> Dataset:
    with transaction.atomic():
        return Dataset.objects.create(owner=owner, name=name, storage_key=key, sha256=sha256, size_bytes=size,
                                      row_count=int(profile["rows"]), profile=profile)


def dataset_name_clean(name: str) -> str:
    """The display name kept for an upload: printable characters only (as Django's multipart parser leaves
    a file name; `manage.py train` passes its own), at most 255 of them."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()[:255]
    return cleaned or "dataset.csv"


async def dataset_upload(*, owner: User, name: str, path: Path) -> Dataset:
    """``path`` is the upload already on local disk. A file that fails profiling is refused with 422 and
    nothing is stored; if recording fails after storing, the stored object is removed again."""
    if not owner.has_role(Role.MEMBER):
        raise Forbidden("uploading datasets needs the member role or higher")
    try:
        profile = await asyncio.to_thread(profile_csv, path)
    except InferenceError as exc:
        raise Invalid(exc.message, details=exc.details or None) from exc
    storage = get_storage()
    key = f"datasets/{owner.pk}/{uuid.uuid4().hex}.csv"
    stored = await storage.save_file(key, path)
    try:
        return await sync_to_async(_dataset_create)(owner=owner, name=dataset_name_clean(name), key=key,
                                                    sha256=stored.sha256, size=stored.size, profile=profile.to_dict())
    except BaseException:
        await storage.delete(key)
        raise


def _dataset_delete_row(*, dataset: Dataset) -> str:
    key = dataset.storage_key
    dataset.delete()
    return key


async def dataset_delete(*, dataset: Dataset) -> None:
    """Removes the row first, then the bytes: a crash in between leaves an orphan file (swept by the
    scheduled cleanup), never a row pointing at nothing."""
    key = await sync_to_async(_dataset_delete_row)(dataset=dataset)
    await get_storage().delete(key)
