"""The console overview's figures across models: request rates and drift alerts, each limited to the
models the caller can see."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def _model(owner_pk: int, visibility: str = "private"):
    from app.registry.models import MlModel

    return MlModel.objects.create(name=f"ov-{uuid.uuid4().hex[:8]}", owner_id=owner_pk, visibility=visibility)


def test_traffic_counts_the_last_minute_of_visible_models(client, make_user):
    from app.monitoring.models import RequestStats

    owner, other = make_user("maintainer"), make_user("maintainer")
    mine, public, hidden = _model(owner.pk), _model(other.pk, "public"), _model(other.pk)
    now = timezone.now().replace(microsecond=0)
    minute = now.replace(second=0)
    for model, requests in ((mine, 90), (public, 30), (hidden, 500)):
        for source in ("a", "b"):  # two serving processes
            RequestStats.objects.create(model=model, version=1, protocol="rest", minute=minute, source=source,
                                        requests=requests, errors=1)
    # Long ago: not in the rate.
    RequestStats.objects.create(model=mine, version=1, protocol="rest", minute=minute - timedelta(minutes=10),
                                source="a", requests=10_000)
    token = login(client, owner)["access"]
    response = client.get("/api/v1/monitoring/traffic", headers=bearer(token))
    assert response.status_code == 200, response.text
    by_model = {row["model"]: row for row in response.json()}
    assert set(by_model) == {mine.name, public.name}
    assert (by_model[mine.name]["requests"], by_model[mine.name]["errors"]) == (180, 2)
    assert by_model[public.name]["requests"] == 60
    assert 0 < by_model[mine.name]["rate_per_second"] <= 3.0


def test_alerts_are_drift_reports_past_threshold_of_visible_models(client, make_user):
    from app.monitoring.models import DriftReport

    owner, other = make_user("member"), make_user("maintainer")
    mine, hidden = _model(owner.pk), _model(other.pk)
    now = timezone.now()
    made: dict[str, list[tuple[int, str]]] = {}
    for model, status in ((mine, "drift"), (mine, "ok"), (mine, "drift"), (hidden, "drift")):
        report = DriftReport.objects.create(
            model=model, version=1, trigger="api", window_start=now - timedelta(hours=1), window_end=now,
            sample_count=500, threshold=0.2, status=status, drifted_features=["x1"] if status == "drift" else [])
        made.setdefault(model.name, []).append((report.pk, status))
    token = login(client, owner)["access"]
    alerts = client.get("/api/v1/monitoring/alerts", headers=bearer(token)).json()
    expected = [pk for pk, status in reversed(made[mine.name]) if status == "drift"]
    assert [a["id"] for a in alerts] == expected
    assert {a["model"] for a in alerts} == {mine.name} and alerts[0]["drifted_features"] == ["x1"]
    assert len(client.get("/api/v1/monitoring/alerts?limit=1", headers=bearer(token)).json()) == 1
    assert client.get("/api/v1/monitoring/alerts?limit=0", headers=bearer(token)).status_code == 422
    assert client.get("/api/v1/monitoring/alerts").status_code == 401
