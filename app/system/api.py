from asgiref.sync import sync_to_async
from ninja import Schema
from ninja_extra import api_controller, route
from pydantic import Field

from app.accounts.models import Role
from app.api.auth import Controller, bearer_auth, require_role
from app.api.openapi import errors
from app.core.db import db_async
from app.monitoring.system import system_overview

from .selectors import worker_list


class WorkerOut(Schema):
    name: str
    ok: bool = Field(description="Whether it answered the ping")
    queues: list[str]


class WorkersOut(Schema):
    workers: list[WorkerOut]
    count: int

@api_controller("/system", tags=["system"], auth=bearer_auth)
class SystemController(Controller):
    @route.get("/workers", response={200: WorkersOut, **errors(403)}, summary="Live Celery workers (admin)")
    async def workers(self) -> dict[str, object]:
        require_role(self.caller, Role.ADMIN)
        workers = await sync_to_async(worker_list, thread_sensitive=False)(timeout=1.5)
        return {"workers": workers, "count": len(workers)}

    @route.get("/overview", response={200: dict[str, object], **errors(403)},
               summary="HTTP latency per route, open websockets, database pool, Celery queues (admin)")
    async def overview(self) -> dict[str, object]:
        require_role(self.caller, Role.ADMIN)
        return await db_async(system_overview)()
