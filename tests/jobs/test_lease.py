"""The worker's side of a job's lease (app/jobs/lease.py) and progress that is recorded once per epoch."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from app.jobs import services
from app.jobs.lease import Lease, LeaseLost
from app.jobs.models import Job, JobKind, JobMetric, JobState

pytestmark = pytest.mark.django_db(transaction=True)


def _running(make_user, worker: str = "w1") -> Job:
    owner = make_user("member")
    job = Job.objects.create(owner_id=owner.pk, kind=JobKind.TRAIN, state=JobState.RUNNING, attempts=1,
                             lease_owner=worker, lease_expires_at=timezone.now() + timedelta(seconds=60))
    return Job.objects.select_related("owner").get(pk=job.pk)


def _epoch_events(job: Job, until: int) -> list[int]:
    """The epochs published on the job's topic, once epoch `until` is among them."""
    from realtime.bus import backlog

    deadline = time.monotonic() + 30
    while True:
        events = asyncio.run(backlog(f"job:{job.pk}", 0)).events or []
        epochs = [int(e.data["epoch"]) for e in events if e.type == "epoch"]
        if until in epochs or time.monotonic() > deadline:
            return epochs
        time.sleep(0.1)


def test_each_epoch_is_recorded_and_published_once(make_user):
    job = _running(make_user)
    assert services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 1, "loss": 0.5})
    # A retried write whose first try had committed, and a resumed attempt reporting the checkpoint's epoch.
    assert services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 1, "loss": 0.5})
    assert services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 2, "loss": 0.4})
    assert services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 1, "loss": 0.5})
    # A worker that lost the lease records nothing.
    assert not services.job_progress(job=job, worker="w2", type="epoch", data={"epoch": 3, "loss": 0.3})
    assert services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 4, "loss": 0.2})
    assert _epoch_events(job, until=4) == [1, 2, 4]
    assert Job.objects.get(pk=job.pk).progress["epoch"] == 4
    # The rows follow the events: one per epoch recorded, none for the refused write.
    assert list(JobMetric.objects.filter(job=job).values_list("epoch", flat=True)) == [1, 2, 4]


def test_epoch_rows_keep_the_figures(make_user):
    job = _running(make_user)
    report = {"epoch": 1, "epochs": 5, "train_loss": 0.7, "val_loss": 0.75, "metric_name": "accuracy",
              "metric": 0.81, "elapsed_s": 0.25, "eta_s": 1.0, "best_epoch": 1}
    assert services.job_progress(job=job, worker="w1", type="epoch", data=report)
    row = JobMetric.objects.get(job=job)
    assert (row.epoch, row.train_loss, row.val_loss, row.metric_name, row.metric, row.elapsed_s) == (
        1, 0.7, 0.75, "accuracy", 0.81, 0.25)


def test_a_write_is_retried_through_a_short_outage_within_the_lease(make_user):
    job = _running(make_user)
    lease = Lease(job=job, worker="w1", seconds=10, renewed=time.monotonic())
    failures = iter([OperationalError("server closed the connection"), OperationalError("connection refused")])

    def write() -> bool:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return services.job_progress(job=job, worker="w1", type="epoch", data={"epoch": 1})

    assert lease.call(write, what="recording epoch 1") is True
    assert Job.objects.get(pk=job.pk).progress == {"epoch": 1}


def test_an_outage_longer_than_the_lease_gives_the_attempt_up(make_user):
    job = _running(make_user)
    lease = Lease(job=job, worker="w1", seconds=1, renewed=time.monotonic())
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise OperationalError("connection refused")

    with pytest.raises(LeaseLost):
        lease.call(down, what="recording epoch 1")
    assert calls > 1 and lease.lost.is_set()
    with pytest.raises(LeaseLost):  # and it stays given up
        lease.check()


def _wait(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_the_heartbeat_renews_and_notices_a_lease_taken_over(make_user):
    job = _running(make_user)
    claimed = time.monotonic()
    lease = Lease(job=job, worker="w1", seconds=1.5, renewed=claimed)
    with lease.renewing():
        assert _wait(lambda: lease.renewed > claimed)
        assert not lease.lost.is_set()
        expires = Job.objects.get(pk=job.pk).lease_expires_at
        assert expires is not None and expires > timezone.now()
        Job.objects.filter(pk=job.pk).update(lease_owner="w2")
        assert _wait(lease.lost.is_set)
    with pytest.raises(LeaseLost):
        lease.check()
