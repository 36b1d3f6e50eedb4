"""app/monitoring services and selectors, called directly: settings, feedback, drift checks (with their
events after commit), the recorder's batch write, retention, and the summaries read from those rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from app.accounts.models import Role, User
from app.core.errors import Forbidden, Invalid, NotFound
from app.monitoring import selectors
from app.monitoring.models import DriftReport, DriftStatus, InputKind, PredictionRecord, RequestStats, Task
from app.monitoring.recording import LATENCY_EDGES_MS, recorder
from app.monitoring.services import (
    Feedback,
    UnknownPrediction,
    drift_check,
    drift_check_scheduled,
    feedback_record,
    monitoring_batch_write,
    monitoring_config_update,
    monitoring_trim,
)
from app.registry.models import MlModel, ModelVersion, Visibility
from tests.service_support import fresh_relay, new_user, published_events, unique

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures(fresh_relay.__name__)]

# A stored feature pipeline (inference.features, format 1) and the training histogram of its column:
# half the training values were <= 0.
PIPELINE = {"version": 1, "columns": [
    {"name": "x", "kind": "numeric", "median": 0.0, "mean": 0.0, "std": 1.0, "edges": [0.0]}]}
REFERENCE = {"x": {"kind": "numeric", "edges": [0.0], "fractions": [0.5, 0.5], "missing": 0.0, "count": 100}}


def model_of(owner: User, **kwargs: Any) -> MlModel:
    return MlModel.objects.create(name=unique("mon"), owner=owner, visibility=Visibility.PUBLIC, **kwargs)


def version(model: MlModel, number: int, *, trained: bool = True) -> ModelVersion:
    extras = {"pipeline": PIPELINE, "reference_stats": REFERENCE, "task": "regression", "target": "y"}
    if not trained:
        extras = {}
    return ModelVersion.objects.create(model=model, number=number, format="safetensors", architecture="mlp",
                                       signature={}, artifact_key=f"models/{unique('a')}", artifact_sha256="0",
                                       artifact_size=1, extras=extras)


def record(model: MlModel, number: int = 1, *, rows: int = 1, task: str = Task.REGRESSION, label: str = "",
           value: float | None = 1.0, x: float = 1.0, ago: timedelta = timedelta(0)) -> uuid.UUID:
    prediction_id = uuid.uuid4()
    PredictionRecord.objects.bulk_create([
        PredictionRecord(model=model, version=number, prediction_id=prediction_id, row=row, rows=rows,
                         protocol="rest", kind=InputKind.RECORDS, created_at=timezone.now() - ago,
                         inputs={"x": x}, outputs=[value], task=task, label=label, value=value, latency_ms=1.0)
        for row in range(rows)])
    return prediction_id


def test_settings_need_the_model_manager_and_apply_after_commit(settings, django_capture_on_commit_callbacks):
    settings.PREDICTION_SAMPLE_RATE, settings.PREDICTION_MAX_ROWS_PER_SECOND = 1.0, 0
    owner = new_user(Role.MAINTAINER)
    model = model_of(owner)
    with pytest.raises(Forbidden):
        monitoring_config_update(model=model, actor=new_user(Role.MAINTAINER), changes={"sample_rate": 0.5})
    with pytest.raises(Invalid) as caught:
        monitoring_config_update(model=model, actor=owner, changes={"sample_rate": 1.5, "drift_threshold": 0})
    assert [d["field"] for d in caught.value.details] == ["sample_rate", "drift_threshold"]
    assert selectors.monitoring_config(model=model)["overrides"] == {"sample_rate": None, "drift_threshold": None}
    assert recorder.sampled(model.pk, model.name, 1)
    with django_capture_on_commit_callbacks(execute=True):
        config = monitoring_config_update(model=model, actor=owner, changes={"sample_rate": 0, "drift_threshold": 0.3})
        assert recorder.sampled(model.pk, model.name, 1), "not before the commit"
    assert (config["sample_rate"], config["drift_threshold"]) == (0.0, 0.3)
    assert not recorder.sampled(model.pk, model.name, 1), "this process's recorder samples at the new rate"
    assert selectors.drift_threshold(model=model) == 0.3
    with django_capture_on_commit_callbacks(execute=True):
        cleared = monitoring_config_update(model=model, actor=new_user(Role.ADMIN), changes={"sample_rate": None})
    assert cleared["overrides"] == {"sample_rate": None, "drift_threshold": 0.3}
    assert recorder.sampled(model.pk, model.name, 1), "back to the deployment's rate"


def test_feedback_scores_predictions_all_or_nothing():
    owner = new_user(Role.MAINTAINER)
    model = model_of(owner)
    member = new_user()
    single = record(model, task=Task.CLASSIFICATION, label="yes", value=None)
    pair = record(model, rows=2, value=3.0)
    with pytest.raises(Forbidden):
        feedback_record(model=model, actor=new_user(Role.VIEWER), items=[Feedback(single, None, "yes")])
    bad_items = [Feedback(single, None, "yes"), Feedback(pair, None, 2.0), Feedback(pair, 5, 2.0),
                 Feedback(single, None, [1])]
    with pytest.raises(Invalid) as caught:
        feedback_record(model=model, actor=member, items=bad_items)
    assert [d["loc"] for d in caught.value.details] == [["items", 1], ["items", 2], ["items", 3]]
    assert not PredictionRecord.objects.filter(model=model, feedback_at__isnull=False).exists()
    with pytest.raises(UnknownPrediction) as unknown:
        feedback_record(model=model, actor=member, items=[Feedback(single, None, "yes"), Feedback(uuid.uuid4(), 0, 1)])
    assert unknown.value.code == "unknown_prediction" and unknown.value.status == 422
    assert feedback_record(model=model, actor=member, items=[Feedback(single, None, "no"), Feedback(pair, 1, 2.5)]) == 2
    scored = {(r.prediction_id, r.row): (r.correct, r.error) for r in PredictionRecord.objects.filter(model=model)
              if r.feedback_at is not None}
    assert scored == {(single, 0): (False, None), (pair, 1): (None, 0.5)}
    feedback_record(model=model, actor=member, items=[Feedback(single, None, "yes")])  # a later label replaces
    assert PredictionRecord.objects.get(prediction_id=single).correct is True
    other_model = model_of(owner)
    with pytest.raises(UnknownPrediction):
        feedback_record(model=other_model, actor=member, items=[Feedback(single, None, "yes")])


def test_a_drift_check_needs_the_owner_and_a_training_reference():
    owner = new_user(Role.MAINTAINER)
    model = model_of(owner)
    version(model, 1)
    version(model, 2, trained=False)
    with pytest.raises(Forbidden):
        drift_check(model=model, actor=new_user(Role.MAINTAINER))
    with pytest.raises(NotFound):
        drift_check(model=model, actor=owner, version=9)
    with pytest.raises(Invalid, match="no training reference"):
        drift_check(model=model, actor=owner, version=2)
    record(model, 2)
    reports, skipped = drift_check(model=model, actor=new_user(Role.ADMIN))
    assert reports == [] and [s["version"] for s in skipped] == [2]
    assert not DriftReport.objects.filter(model=model).exists()


def test_a_drifted_version_is_reported_and_announced_after_commit(settings, django_capture_on_commit_callbacks):
    settings.DRIFT_MIN_SAMPLES = 10
    owner = new_user(Role.MAINTAINER)
    model = model_of(owner)
    version(model, 1)
    for _ in range(20):
        record(model, 1, x=5.0)  # every serving value above the training median
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        reports, skipped = drift_check(model=model, actor=owner)
        assert published_events(f"model:{model.name}") == []
    assert callbacks and skipped == []
    (report,) = reports
    assert (report.status, report.sample_count, report.drifted_features, report.trigger) == (
        DriftStatus.DRIFT, 20, ["x"], "api")
    for topic in (f"model:{model.name}", f"user:{owner.username}"):
        ((type_, data),) = published_events(topic)
        assert type_ == "drift" and (data["report_id"], data["version"]) == (report.pk, 1)
        assert data["features"]["x"] > settings.DRIFT_THRESHOLD


def test_too_few_samples_store_a_report_but_announce_nothing(settings, django_capture_on_commit_callbacks):
    settings.DRIFT_MIN_SAMPLES = 50
    owner = new_user(Role.MAINTAINER)
    model = model_of(owner)
    version(model, 1)
    for _ in range(5):
        record(model, 1, x=5.0)
    with django_capture_on_commit_callbacks(execute=True):
        (report,), _ = drift_check(model=model, actor=owner)
    assert report.status == DriftStatus.INSUFFICIENT_DATA and report.drifted_features == []
    assert published_events(f"model:{model.name}") == []


def test_the_scheduled_check_reports_a_version_once_per_period(settings):
    settings.DRIFT_MIN_SAMPLES = 1
    model = model_of(new_user(Role.MAINTAINER))
    version(model, 1)
    record(model, 1, x=-1.0)
    before = DriftReport.objects.filter(model=model).count()
    drift_check_scheduled()
    drift_check_scheduled()  # a redelivered task
    reports = DriftReport.objects.filter(model=model)
    assert before == 0 and [(r.version, r.trigger) for r in reports] == [(1, "schedule")]


def test_the_batch_write_replaces_a_minute_and_drops_rows_of_deleted_models():
    model = model_of(new_user(Role.MAINTAINER))
    gone = model_of(new_user(Role.MAINTAINER))
    minute = timezone.now().replace(second=0, microsecond=0)
    buckets = [0] * (len(LATENCY_EDGES_MS) + 1)

    def stats(m: MlModel, requests: int) -> RequestStats:
        return RequestStats(model_id=m.pk, version=1, protocol="rest", minute=minute, source="proc-1",
                            requests=requests, errors=1, rows=requests, statuses={"timeout": 1},
                            latency_sum_ms=2.0 * requests, latency_max_ms=4.0, latency_buckets=buckets)

    row = PredictionRecord(model_id=gone.pk, version=1, prediction_id=uuid.uuid4(), protocol="rest",
                           kind=InputKind.RECORDS, created_at=timezone.now(), inputs={}, outputs=[], latency_ms=1)
    gone.delete()
    monitoring_batch_write(records=[row], stats=[stats(model, 3), stats(gone, 3)])
    monitoring_batch_write(records=[], stats=[stats(model, 7)])  # the same process, later in the minute
    assert list(RequestStats.objects.filter(model=model).values_list("requests", flat=True)) == [7]
    assert not PredictionRecord.objects.filter(model_id=gone.pk).exists()
    summary = selectors.requests_summary(model=model, start=minute, end=minute + timedelta(minutes=1), bucket=60,
                                         version=None)
    assert (summary["count"], summary["errors"], summary["by_status"], summary["latency_ms"]["mean"]) == (
        7, 1, {"ok": 6, "timeout": 1}, 2.0)


def test_retention_deletes_old_rows_only(settings):
    settings.MONITORING_RETENTION_DAYS = 1
    model = model_of(new_user(Role.MAINTAINER))
    old, new = record(model, ago=timedelta(days=2)), record(model)
    monitoring_trim()
    assert list(PredictionRecord.objects.filter(model=model).values_list("prediction_id", flat=True)) == [new]
    assert old != new
