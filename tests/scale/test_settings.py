"""The settings docs/scaling.md names, in the single-host configuration (these run in the ordinary
pytest run; the several-hosts drill is test_multihost.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.envsetup import ROOT
from tests.support import child_env

PROBE = """
import django
django.setup()
from django.conf import settings
from workers.celery import app
route = app.amqp.router.route({}, "workers.tasks.train_job_task")
print(route["queue"].name, sorted(settings.CELERY_TASK_ROUTES), settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"])
"""


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=child_env(env), capture_output=True, text=True,
                          timeout=120, check=False)


def test_task_routes_send_a_job_type_to_its_own_queue():
    routes = "workers.tasks.train_job_task=train, workers.tasks.batch_predict_job_task=batch"
    routed = _probe(TORCHWIRE_TASK_ROUTES=routes)
    assert routed.returncode == 0, routed.stderr
    queue, routed_tasks, _ = routed.stdout.split(" ", 2)
    assert queue == "train" and "workers.tasks.batch_predict_job_task" in routed_tasks
    default = _probe(TORCHWIRE_TASK_ROUTES="")
    assert default.returncode == 0 and default.stdout.startswith("default "), default.stderr
    bad = _probe(TORCHWIRE_TASK_ROUTES="workers.tasks.train_job_task")
    assert bad.returncode != 0 and "is not task.name=queue" in bad.stderr


def test_channel_layer_urls_list_the_shards_in_order():
    shards = _probe(TORCHWIRE_CHANNEL_LAYER_URLS="redis://10.0.0.1:6379/0,redis://10.0.0.2:6379/0")
    assert shards.returncode == 0, shards.stderr
    assert shards.stdout.strip().endswith("['redis://10.0.0.1:6379/0', 'redis://10.0.0.2:6379/0']")
