"""app/jobs services and selectors, called directly: what a job request must satisfy, the lease a worker
holds, and that the task is dispatched and the events published only when the job's row commits."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.utils import timezone

from app.accounts.models import Role, User
from app.core import tasks
from app.core.errors import Conflict, Forbidden, Invalid, NotFound
from app.datasets.models import Dataset
from app.jobs.models import Job, JobEvent, JobKind, JobState
from app.jobs.selectors import job_get, job_list
from app.jobs.services import (
    job_batch_predict_create,
    job_cancel,
    job_claim,
    job_fail,
    job_heartbeat,
    job_mark_cancelled,
    job_progress,
    job_reap_expired,
    job_succeed,
    job_train_create,
)
from app.registry.models import MlModel, ModelVersion, Stage, Visibility
from tests.service_support import fresh_relay, new_user, published_events, unique, written_events

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures(fresh_relay.__name__)]

TRAIN_TASK = "workers.tasks.train_job_task"
BATCH_TASK = "workers.tasks.batch_predict_job_task"
COLUMNS = [{"name": "x", "kind": "numeric"}, {"name": "city", "kind": "categorical"},
           {"name": "label", "kind": "categorical"}]
# A stored feature pipeline (inference.features, format 1) reading x and city.
PIPELINE = {"version": 1, "columns": [
    {"name": "x", "kind": "numeric", "median": 0.0, "mean": 0.0, "std": 1.0, "edges": [0.0]},
    {"name": "city", "kind": "categorical", "categories": ["Oslo"]}]}

Dispatched = Callable[[], list[tuple[str, list[Any]]]]


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dispatched]:
    """Tasks go to the real broker, on a queue of this test's own that no worker consumes; the value
    lists (task name, args) sent so far, oldest first."""
    queue = unique("svc-test-queue")
    client = Celery("torchwire-service-tests")
    client.config_from_object("django.conf:settings", namespace="CELERY")
    client.conf.task_default_queue = queue
    client.conf.task_routes = {}
    monkeypatch.setattr(tasks, "celery_client", lambda: client)
    broker: Any = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def sent() -> list[tuple[str, list[Any]]]:
        out = []
        for raw in reversed(broker.lrange(queue, 0, -1)):  # kombu LPUSHes, workers BRPOP
            message = json.loads(raw)
            body = json.loads(base64.b64decode(message["body"]))
            out.append((message["headers"]["task"], body[0]))
        return out

    yield sent
    broker.delete(queue, *broker.scan_iter(f"*{queue}*"))
    client.close()


def dataset_of(owner: User, columns: list[dict[str, str]] = COLUMNS) -> Dataset:
    return Dataset.objects.create(owner=owner, name="d.csv", storage_key=f"datasets/{unique('k')}.csv", sha256="0",
                                  size_bytes=1, row_count=10, profile={"rows": 10, "columns": columns})


def train(owner: User, dataset: Dataset, **overrides: Any) -> Job:
    args: dict[str, Any] = {"target": "label", "task": "classification", "model_name": unique("trained")}
    return job_train_create(owner=owner, dataset_id=dataset.pk, **(args | overrides))


def queued_job(owner: User) -> Job:
    return Job.objects.create(owner=owner, kind=JobKind.TRAIN, params={})


def test_a_bad_training_request_names_its_field_and_creates_nothing(dispatched):
    owner = new_user()
    dataset = dataset_of(owner)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"target": "nope"}, "target"),
        ({"task": "clustering"}, "task"),
        ({"task": "regression"}, "target"),  # label is categorical
        ({"features": ["x", "ghost"]}, "features"),
        ({"features": ["x", "label"]}, "features"),
        ({"features": []}, "features"),
        ({"hyperparameters": {"epochs": 5, "momentum": 0.9}}, "hyperparameters"),
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters"),
        ({"model_name": "Bad Name"}, "model_name"),
    ]
    for overrides, field in cases:
        with pytest.raises(Invalid) as caught:
            train(owner, dataset, **overrides)
        assert caught.value.details[0]["field"] == field, overrides
    assert not Job.objects.filter(owner=owner).exists() and not MlModel.objects.filter(owner=owner).exists()
    assert dispatched() == []


def test_who_may_train_on_what():
    owner, other = new_user(), new_user()
    dataset = dataset_of(owner)
    with pytest.raises(Forbidden):
        train(new_user(Role.VIEWER), dataset)
    with pytest.raises(NotFound):
        train(other, dataset)  # another member's dataset does not exist for them
    taken = MlModel.objects.create(name=unique("taken"), owner=new_user(Role.MAINTAINER))
    with pytest.raises(Conflict):
        train(owner, dataset, model_name=taken.name)  # whether or not the caller can see it
    assert not Job.objects.filter(owner__in=[owner, other]).exists()


def test_a_training_job_is_queued_and_dispatched_after_its_commit(django_capture_on_commit_callbacks, dispatched):
    owner = new_user()
    dataset = dataset_of(owner)
    with django_capture_on_commit_callbacks(execute=True):
        job = train(owner, dataset, features=["x"], hyperparameters={"epochs": 3}, promote=True)
        assert dispatched() == [], "no task before the job's row commits"
    assert dispatched() == [(TRAIN_TASK, [job.pk])]
    assert (job.state, job.kind, job.params["target"], job.params["hyperparameters"]["epochs"]) == (
        JobState.QUEUED, JobKind.TRAIN, "label", 3)
    assert job.model is not None and (job.model.owner_id, job.model.visibility) == (owner.pk, Visibility.PRIVATE)
    assert list(JobEvent.objects.filter(job=job).values_list("type", flat=True)) == ["queued"]
    for topic in (f"job:{job.pk}", f"user:{owner.username}"):
        assert published_events(topic) == [("queued", {"job_id": job.pk, "kind": "train", "state": "queued",
                                                       "model": job.params["model_name"]})]
    again = train(owner, dataset, model_name=job.params["model_name"])
    assert again.model_id == job.model_id, "a second job trains onto the caller's own model"


def test_cancel_needs_the_owner_or_an_admin_and_stops_a_queued_job_at_once(django_capture_on_commit_callbacks):
    owner = new_user()
    job = queued_job(owner)
    with pytest.raises(Forbidden):
        job_cancel(job=job, actor=new_user())
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = job_cancel(job=job, actor=owner)
    assert (cancelled.state, cancelled.cancel_requested, cancelled.finished_at is not None) == (
        JobState.CANCELLED, True, True)
    assert [t for t, _ in published_events(f"job:{job.pk}")] == ["cancelled"]
    with pytest.raises(Conflict):
        job_cancel(job=job, actor=owner)
    running = queued_job(owner)
    job_claim(job_id=running.pk, worker="w1")
    flagged = job_cancel(job=running, actor=new_user(Role.ADMIN))
    assert (flagged.state, flagged.cancel_requested) == (JobState.RUNNING, True), "a running job stops at a checkpoint"
    assert job_mark_cancelled(job=running, worker="w1")
    assert Job.objects.get(pk=running.pk).state == JobState.CANCELLED


def test_one_worker_holds_the_lease_until_it_expires():
    job = queued_job(new_user())
    claimed, wait = job_claim(job_id=job.pk, worker="w1")
    assert claimed is not None and wait == 0 and (claimed.state, claimed.attempts, claimed.lease_owner) == (
        JobState.RUNNING, 1, "w1")
    none, wait = job_claim(job_id=job.pk, worker="w2")
    assert none is None and 0 < wait <= settings.JOB_LEASE_SECONDS + 1
    assert job_heartbeat(job=job, worker="w1") and not job_heartbeat(job=job, worker="w2")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    taken, _ = job_claim(job_id=job.pk, worker="w2")
    assert taken is not None and (taken.attempts, taken.lease_owner) == (2, "w2")
    started = [e.data for e in JobEvent.objects.filter(job=job, type="started")]
    assert [(d["worker"], d["retry"]) for d in started] == [("w1", False), ("w2", True)]
    # The vanished worker can no longer write.
    assert not job_progress(job=job, worker="w1", type="epoch", data={"epoch": 1})
    assert not job_succeed(job=job, worker="w1", result={"loss": 0.1})
    assert job_succeed(job=job, worker="w2", result={"loss": 0.1}, output_key="out.csv")
    done = Job.objects.get(pk=job.pk)
    assert (done.state, done.result, done.output_key, done.lease_expires_at) == (
        JobState.SUCCEEDED, {"loss": 0.1}, "out.csv", None)
    assert not job_fail(job=job, worker="w2", error="late")
    assert job_claim(job_id=job.pk, worker="w3") == (None, 0.0)
    assert job_claim(job_id=job.pk + 10_000, worker="w3") == (None, 0.0)


def test_a_claim_ends_a_cancelled_or_exhausted_job():
    owner = new_user()
    flagged = queued_job(owner)
    Job.objects.filter(pk=flagged.pk).update(cancel_requested=True)
    assert job_claim(job_id=flagged.pk, worker="w") == (None, 0.0)
    assert Job.objects.get(pk=flagged.pk).state == JobState.CANCELLED
    exhausted = queued_job(owner)
    Job.objects.filter(pk=exhausted.pk).update(attempts=settings.JOB_MAX_ATTEMPTS)
    assert job_claim(job_id=exhausted.pk, worker="w") == (None, 0.0)
    failed = Job.objects.get(pk=exhausted.pk)
    assert failed.state == JobState.FAILED and "gave up" in failed.error
    assert list(JobEvent.objects.filter(job=failed).values_list("type", flat=True)) == ["failed"]


def test_progress_of_an_epoch_is_recorded_and_published_once(django_capture_on_commit_callbacks):
    job = queued_job(new_user())
    job_claim(job_id=job.pk, worker="w1")
    with django_capture_on_commit_callbacks(execute=True):
        for epoch in (1, 2, 2, 1):  # a retried write, and an epoch a resumed attempt reports again
            assert job_progress(job=job, worker="w1", type="epoch", data={"epoch": epoch, "loss": 1 / epoch})
    assert Job.objects.get(pk=job.pk).progress == {"epoch": 2, "loss": 0.5}
    epochs = [d["epoch"] for t, d in written_events(f"job:{job.pk}") if t == "epoch"]
    assert epochs == [1, 2]
    assert [d["epoch"] for t, d in published_events(f"job:{job.pk}") if t == "epoch"] == [1, 2]


def test_reaping_redispatches_jobs_whose_worker_vanished(dispatched):
    owner = new_user()
    expired, live, stale = queued_job(owner), queued_job(owner), queued_job(owner)
    for job in (expired, live):
        job_claim(job_id=job.pk, worker="w")
    Job.objects.filter(pk=expired.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    Job.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(
        seconds=settings.JOB_LEASE_SECONDS * 5 + 1))
    mine = {expired.pk, live.pk, stale.pk}
    assert set(job_reap_expired()) & mine == {expired.pk, stale.pk}
    assert {(name, args[0]) for name, args in dispatched() if args[0] in mine} == {
        (TRAIN_TASK, expired.pk), (TRAIN_TASK, stale.pk)}


def test_job_list_and_get_show_the_owner_their_jobs_and_an_admin_all():
    owner, other, admin = new_user(), new_user(), new_user(Role.ADMIN)
    mine, theirs = queued_job(owner), queued_job(other)
    job_claim(job_id=theirs.pk, worker="w")
    assert [j.pk for j in job_list(user=owner)] == [mine.pk]
    assert {mine.pk, theirs.pk} <= {j.pk for j in job_list(user=admin)}
    assert {j.pk for j in job_list(user=admin, state=JobState.RUNNING)} & {mine.pk, theirs.pk} == {theirs.pk}
    assert job_get(user=admin, job_id=mine.pk).pk == mine.pk
    with pytest.raises(NotFound):
        job_get(user=other, job_id=mine.pk)


def _version(model: MlModel, number: int, *, extras: dict[str, Any], stage: str = Stage.NONE) -> ModelVersion:
    return ModelVersion.objects.create(model=model, number=number, format="safetensors", architecture="mlp",
                                       signature={}, artifact_key=f"models/{unique('a')}", artifact_sha256="0",
                                       artifact_size=1, extras=extras, stage=stage)


def test_batch_prediction_needs_a_tabular_version_and_the_columns_it_reads(django_capture_on_commit_callbacks,
                                                                          dispatched):
    owner = new_user()
    model = MlModel.objects.create(name=unique("tab"), owner=new_user(Role.MAINTAINER), visibility=Visibility.PUBLIC)
    tabular = {"pipeline": PIPELINE, "task": "classification", "labels": ["no", "yes"]}
    _version(model, 1, extras={})
    _version(model, 2, extras=tabular | {"labels": []})
    _version(model, 3, extras=tabular)
    dataset, narrow = dataset_of(owner), dataset_of(owner, columns=[{"name": "x", "kind": "numeric"}])
    cases: list[tuple[int | None, Dataset, str]] = [
        (None, dataset, "no production version"), (1, dataset, "only tabular models"),
        (2, dataset, "without its class labels"), (3, narrow, "lacks columns"),
    ]
    for version, data, message in cases:
        with pytest.raises(Invalid, match=message):
            job_batch_predict_create(owner=owner, model_name=model.name, version=version, dataset_id=data.pk)
    with pytest.raises(NotFound):
        job_batch_predict_create(owner=owner, model_name=model.name, version=9, dataset_id=dataset.pk)
    with pytest.raises(Forbidden):
        job_batch_predict_create(owner=new_user(Role.VIEWER), model_name=model.name, version=3, dataset_id=dataset.pk)
    assert dispatched() == []
    ModelVersion.objects.filter(model=model, number=3).update(stage=Stage.PRODUCTION)
    with django_capture_on_commit_callbacks(execute=True):
        job = job_batch_predict_create(owner=owner, model_name=model.name, version=None, dataset_id=dataset.pk)
    assert (job.kind, job.params) == (JobKind.BATCH_PREDICT, {"model": model.name, "version": 3,
                                                              "dataset_id": dataset.pk})
    assert dispatched() == [(BATCH_TASK, [job.pk])]
