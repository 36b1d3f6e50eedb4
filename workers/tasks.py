"""Celery tasks: thin, idempotent, taking ids; they call app services and own only retry policy."""

from __future__ import annotations

import logging
import os
import socket
import time

from workers.celery import app

logger = logging.getLogger(__name__)


@app.task(name="workers.tasks.health_ping_task", acks_late=True)
def health_ping_task() -> dict[str, object]:
    """Proves a worker consumes the queue. /readyz does not call it: readiness must not depend on workers."""
    from app.core.logging import request_id_var

    logger.info("health ping")
    return {"ok": True, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "request_id": request_id_var.get()}
