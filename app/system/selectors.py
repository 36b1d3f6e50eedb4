from __future__ import annotations

from typing import Any

from app.core.tasks import celery_client


def worker_list(*, timeout: float) -> list[dict[str, Any]]:
    """Workers that answer a broadcast ping within ``timeout`` seconds. Blocking: run it off the loop."""
    celery_app = celery_client()
    replies = celery_app.control.inspect(timeout=timeout).ping() or {}
    active = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    return [
        {
            "name": name,
            "ok": reply.get("ok") == "pong",
            "queues": sorted(q.get("name", "") for q in active.get(name, [])),
        }
        for name, reply in sorted(replies.items())
    ]
