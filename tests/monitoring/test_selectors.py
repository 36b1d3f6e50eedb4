"""app/monitoring selectors, called directly on rows written by the test: windows, request and accuracy
summaries, the console's traffic and alerts."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from app.accounts.models import Role
from app.core.errors import Invalid, NotFound
from app.monitoring import selectors
from app.monitoring.models import DriftReport, DriftStatus, InputKind, PredictionRecord, RequestStats, Task
from app.monitoring.recording import LATENCY_EDGES_MS
from app.monitoring.services import Feedback, feedback_record
from app.registry.models import MlModel, ModelVersion, Visibility
from tests.service_support import new_user, unique

pytestmark = pytest.mark.django_db


def model_of() -> MlModel:
    return MlModel.objects.create(name=unique("sel"), owner=new_user(Role.MAINTAINER), visibility=Visibility.PUBLIC)


def stats(model: MlModel, minute, *, version: int = 1, requests: int = 10, errors: int = 0,
          buckets: dict[int, int] | None = None, max_ms: float = 1.0, source: str = "p") -> RequestStats:
    counts = [0] * (len(LATENCY_EDGES_MS) + 1)
    for index, count in (buckets or {}).items():
        counts[index] = count
    return RequestStats.objects.create(model=model, version=version, protocol="rest", minute=minute, source=source,
                                       requests=requests, errors=errors, rows=requests, statuses={},
                                       latency_sum_ms=requests * 1.0, latency_max_ms=max_ms, latency_buckets=counts)


def classified(model: MlModel, version: int = 1, label: str = "yes") -> uuid.UUID:
    prediction_id = uuid.uuid4()
    PredictionRecord.objects.create(model=model, version=version, prediction_id=prediction_id, protocol="rest",
                                    kind=InputKind.RECORDS, created_at=timezone.now(), inputs={"x": 1}, outputs=[],
                                    task=Task.CLASSIFICATION, label=label, latency_ms=1.0)
    return prediction_id


def test_parse_window_accepts_a_minute_to_the_retention_period(settings):
    settings.MONITORING_RETENTION_DAYS = 7
    assert selectors.parse_window("15m") == timedelta(minutes=15)
    assert selectors.parse_window("7d") == timedelta(days=7)
    for bad in ("59s", "8d", "1w", "", "1.5h", "15 m"):
        with pytest.raises(Invalid) as caught:
            selectors.parse_window(bad)
        assert caught.value.details[0]["field"] == "window"


def test_latency_percentiles_interpolate_within_buckets_and_never_pass_the_max():
    model = model_of()
    minute = timezone.now().replace(second=0, microsecond=0)
    # 90 requests in (7.5, 10] ms and 10 in (20, 30] ms, the slowest 28 ms; from two serving processes.
    stats(model, minute, requests=90, buckets={6: 90}, max_ms=9.0, source="a")
    stats(model, minute, requests=10, errors=2, buckets={9: 10}, max_ms=28.0, source="b")
    summary = selectors.requests_summary(model=model, start=minute, end=minute + timedelta(minutes=1), bucket=60,
                                         version=None)
    latency = summary["latency_ms"]
    assert (summary["count"], summary["errors"], summary["error_rate"]) == (100, 2, 0.02)
    assert latency["p50"] == pytest.approx(7.5 + 2.5 * 50 / 90, abs=1e-3)
    assert latency["p99"] == pytest.approx(20 + 8 * 9 / 10, abs=1e-3)
    assert latency["max"] == 28.0 and all(latency[p] <= 28.0 for p in ("p50", "p90", "p95", "p99"))
    only_v2 = selectors.requests_summary(model=model, start=minute, end=minute + timedelta(minutes=1), bucket=60,
                                         version=2)
    assert only_v2["count"] == 0 and only_v2["latency_ms"]["p50"] is None


def test_live_accuracy_counts_only_labelled_predictions():
    owner = new_user(Role.MAINTAINER)
    model = MlModel.objects.create(name=unique("sel"), owner=owner)
    ids = [classified(model) for _ in range(4)]
    feedback_record(model=model, actor=owner, items=[Feedback(ids[0], None, "yes"), Feedback(ids[1], None, "yes"),
                                                     Feedback(ids[2], None, "no")])
    end = timezone.now() + timedelta(seconds=1)
    accuracy = selectors.accuracy_summary(model=model, version=1, start=end - timedelta(hours=1), end=end, bucket=60,
                                          task=Task.CLASSIFICATION)
    assert (accuracy["metric"], accuracy["labeled"], accuracy["value"]) == ("accuracy", 3, round(2 / 3, 6))


def test_traffic_counts_the_last_whole_minute_and_the_current_one():
    busy, idle = model_of(), model_of()
    now = timezone.now().replace(second=30, microsecond=0)
    current = now.replace(second=0)
    stats(busy, current, requests=30, errors=3)
    stats(busy, current - timedelta(minutes=1), requests=60, source="q")
    stats(busy, current - timedelta(minutes=2), requests=1000, source="r")  # too old
    traffic = {row["model"]: row for row in selectors.traffic_by_model(models=[busy, idle], now=now)}
    assert (traffic[busy.name]["requests"], traffic[busy.name]["errors"]) == (90, 3)
    assert traffic[busy.name]["rate_per_second"] == round(90 / 90, 3)  # 90 requests over 90 seconds
    assert (traffic[idle.name]["requests"], traffic[idle.name]["rate_per_second"]) == (0, 0.0)


def test_alerts_are_the_newest_drift_reports_of_the_given_models():
    watched, other = model_of(), model_of()
    now = timezone.now()

    def report(model: MlModel, status: str) -> DriftReport:
        return DriftReport.objects.create(model=model, version=1, trigger="api", window_start=now, window_end=now,
                                          sample_count=100, threshold=0.2, status=status)

    first, _, second = report(watched, DriftStatus.DRIFT), report(watched, DriftStatus.OK), report(watched,
                                                                                                  DriftStatus.DRIFT)
    report(other, DriftStatus.DRIFT)
    alerts = selectors.drift_alert_list(models=[watched], limit=5)
    assert [a["id"] for a in alerts] == [second.pk, first.pk] and all(a["drifted"] for a in alerts)
    assert [a["id"] for a in selectors.drift_alert_list(models=[watched], limit=1)] == [second.pk]


def test_the_summary_covers_versions_recorded_or_served_in_the_window():
    model = model_of()
    for number in (1, 2, 3):
        ModelVersion.objects.create(model=model, number=number, format="safetensors", signature={},
                                    artifact_key=unique("k"), artifact_sha256="0", artifact_size=1)
    classified(model, version=1)
    stats(model, timezone.now().replace(second=0, microsecond=0), version=2)
    summary = selectors.monitoring_summary(model=model, window=timedelta(hours=1))
    assert [v["version"] for v in summary["versions"]] == [1, 2]
    assert [v["recorded"] for v in summary["versions"]] == [1, 0]
    assert summary["versions"][0]["predictions"]["fractions"] == {"yes": 1.0}
    assert summary["requests"]["count"] == 10 and summary["window"]["seconds"] == 3600
    with pytest.raises(NotFound):
        selectors.monitoring_summary(model=model, window=timedelta(hours=1), version=9)
