import asyncio
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from ninja import File, Query, Schema
from ninja.files import UploadedFile
from ninja_extra import api_controller, route
from pydantic import Field

from app.accounts.models import Role
from app.api.auth import Controller, bearer_auth, role_before_body
from app.api.openapi import errors
from app.core.errors import PayloadTooLarge
from app.core.storage import get_storage
from tabular.profiling import preview

from . import selectors, services
from .models import Dataset


class DatasetOut(Schema):
    id: int
    name: str
    owner: str
    size_bytes: int
    sha256: str
    row_count: int
    columns: list[dict[str, Any]]
    created_at: datetime


class DatasetPreviewOut(Schema):
    id: int
    columns: list[str]
    rows: list[dict[str, str]] = Field(description="The first rows: raw (stripped) strings keyed by column")


def dataset_out(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.pk,
        "name": dataset.name,
        "owner": dataset.owner.username,
        "size_bytes": dataset.size_bytes,
        "sha256": dataset.sha256,
        "row_count": dataset.row_count,
        "columns": [{"type": c.get("kind"), **c} for c in dataset.profile.get("columns", [])],
        "created_at": dataset.created_at,
    }


def _upload_path(upload: UploadedFile) -> tuple[Path, bool]:
    if hasattr(upload, "temporary_file_path"):
        return Path(upload.temporary_file_path()), False
    fd, name = tempfile.mkstemp(prefix="tw-dataset-", suffix=".csv")
    with os.fdopen(fd, "wb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    return Path(name), True


@api_controller("/datasets", tags=["datasets"], auth=bearer_auth)
class DatasetController(Controller):
    @route.post("", response={201: DatasetOut, **errors(403, 507)}, summary="Upload a CSV (multipart field `file`)",
                permissions=[role_before_body(Role.MEMBER)])
    async def upload(self, file: File[UploadedFile]) -> tuple[int, dict[str, Any]]:
        if file.size is not None and file.size > settings.MAX_DATASET_BYTES:
            raise PayloadTooLarge(f"dataset exceeds the limit of {settings.MAX_DATASET_BYTES} bytes")
        path, remove = await asyncio.to_thread(_upload_path, file)
        try:
            dataset = await services.dataset_upload(owner=self.caller, name=file.name or "", path=path)
        finally:
            if remove:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        return 201, await sync_to_async(dataset_out)(dataset)

    @route.get("", response=list[DatasetOut], summary="The caller's datasets")
    async def list_datasets(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            return [dataset_out(d) for d in selectors.dataset_list(user=self.caller)]

        return await sync_to_async(run)()

    @route.get("/{dataset_id}", response=DatasetOut, summary="A dataset with its column profile")
    async def get_dataset(self, dataset_id: int) -> dict[str, Any]:
        dataset = await sync_to_async(selectors.dataset_get)(user=self.caller, dataset_id=dataset_id)
        return await sync_to_async(dataset_out)(dataset)

    @route.get("/{dataset_id}/preview", response=DatasetPreviewOut, summary="The first rows")
    async def preview(self, dataset_id: int, rows: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
        dataset = await sync_to_async(selectors.dataset_get)(user=self.caller, dataset_id=dataset_id)
        fd, name = tempfile.mkstemp(prefix="tw-preview-", suffix=".csv")
        os.close(fd)
        tmp = Path(name)
        try:
            # Only the head of the file: stop once enough lines arrived (quoted newlines may need more,
            # hence the margin), never the whole dataset.
            with tmp.open("wb") as fh:  # noqa: ASYNC230 - local temp file, small writes
                newlines = 0
                async for chunk in get_storage().stream(dataset.storage_key):
                    fh.write(chunk)
                    newlines += chunk.count(b"\n")
                    if newlines > rows * 2 + 10:
                        break
            data = await asyncio.to_thread(preview, tmp, rows)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        columns = [c["name"] for c in dataset.profile.get("columns", [])]
        return {"id": dataset.pk, "columns": columns, "rows": data}

    @route.delete("/{dataset_id}", response={204: None}, summary="Delete a dataset and its file")
    async def delete(self, dataset_id: int) -> tuple[int, None]:
        dataset = await sync_to_async(selectors.dataset_get)(user=self.caller, dataset_id=dataset_id)
        await services.dataset_delete(dataset=dataset)
        return 204, None
