"""Writes for model monitoring. Sync and transactional; async callers wrap each in one ``sync_to_async``.

Who may do what (docs/monitoring.md): reading monitoring needs read access to the model; feedback
needs that and the member role (the callers who may call the model); drift checks on demand need the
model's owner or an admin; monitoring settings follow the registry's rule for model settings.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from app.accounts.models import Role, User
from app.core import invalidation
from app.core.errors import Forbidden, Invalid, NotFound
from app.events.services import publish_on_commit
from app.registry.models import MlModel, ModelVersion
from app.registry.selectors import model_can_manage

from . import selectors
from .models import DriftReport, DriftStatus, MonitoringConfig, PredictionRecord, RequestStats, Task

logger = logging.getLogger(__name__)

TRIGGER_SCHEDULE = "schedule"
TRIGGER_API = "api"
MAX_THRESHOLD = 100.0
TRIM_CHUNK = 10_000


def monitoring_batch_write(*, records: Sequence[PredictionRecord], stats: Sequence[RequestStats]) -> None:
    """What a serving process recorded since its last flush, in one transaction. ``stats`` rows carry
    absolute values for their (model, version, protocol, minute, source), so they replace what is there.
    Rows of a model deleted meanwhile are dropped."""
    model_ids = {r.model_id for r in records} | {s.model_id for s in stats}
    alive = set(MlModel.objects.filter(pk__in=model_ids).values_list("pk", flat=True))
    with transaction.atomic():
        PredictionRecord.objects.bulk_create([r for r in records if r.model_id in alive], batch_size=500)
        RequestStats.objects.bulk_create(
            [s for s in stats if s.model_id in alive],
            batch_size=500,
            update_conflicts=True,
            unique_fields=["model", "version", "protocol", "minute", "source"],
            update_fields=["requests", "errors", "rows", "statuses", "latency_sum_ms", "latency_max_ms",
                           "latency_buckets"],
        )


# --- settings --------------------------------------------------------------------------------------


def monitoring_config_update(*, model: MlModel, actor: User, changes: dict[str, Any]) -> dict[str, Any]:
    """Sets or (with null) clears the model's sample rate and drift threshold; all or nothing."""
    if not model_can_manage(user=actor, model=model):
        raise Forbidden("only the model's owner (maintainer or higher) or an admin can change its monitoring")
    errors = []
    rate = changes.get("sample_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0):
        errors.append({"loc": ["sample_rate"], "field": "sample_rate", "msg": "must be a number in [0, 1]"})
    threshold = changes.get("drift_threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold <= MAX_THRESHOLD
    ):
        errors.append({"loc": ["drift_threshold"], "field": "drift_threshold",
                       "msg": f"must be a number in (0, {MAX_THRESHOLD:g}]"})
    if errors:
        raise Invalid(f"invalid monitoring settings: {errors[0]['field']}: {errors[0]['msg']}", details=errors)
    with transaction.atomic():
        config, _ = MonitoringConfig.objects.select_for_update().get_or_create(model=model)
        if "sample_rate" in changes:
            config.sample_rate = None if rate is None else float(rate)
        if "drift_threshold" in changes:
            config.drift_threshold = None if threshold is None else float(threshold)
        config.save()
        invalidation.changed_on_commit(invalidation.SAMPLING, (model.pk, config.sample_rate))
    return selectors.monitoring_config(model=model)


# --- feedback --------------------------------------------------------------------------------------


class UnknownPrediction(Invalid):
    code = "unknown_prediction"


@dataclass(frozen=True)
class Feedback:
    prediction_id: uuid.UUID
    row: int | None
    label: Any


def _problem(index: int, item: Feedback, message: str) -> dict[str, Any]:
    return {"loc": ["items", index], "field": f"items.{index}", "prediction_id": str(item.prediction_id),
            "row": item.row, "msg": message}


def _score(record: PredictionRecord, label: Any) -> str | None:
    """Sets ``correct`` or ``error`` from ``label``; returns why it cannot, if so."""
    if record.task == Task.CLASSIFICATION:
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, str | int):
            return "label must be a class label (a string; an integer is read as its digits)"
        record.correct, record.error = str(label) == record.label, None
        return None
    if record.task == Task.REGRESSION and record.value is not None:
        if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
            return "label must be a finite number for a regression prediction"
        record.correct, record.error = None, record.value - float(label)
        return None
    return "this prediction has no label or value that feedback can be compared with"


def feedback_record(*, model: MlModel, actor: User, items: Sequence[Feedback]) -> int:
    """Records ground truth for recorded predictions of ``model``; all items or none. A later label for
    the same row replaces the earlier one. Returns how many rows were labelled.

    422 ``unknown_prediction`` when an id is unknown here (never recorded: not sampled, another model's,
    past retention, or still in a serving process's buffer), 422 ``validation_error`` when an item cannot
    be applied; ``details`` lists each. (404 stays for the model in the URL.)
    """
    if not actor.has_role(Role.MEMBER):
        raise Forbidden("sending feedback needs the member role or higher")
    now = timezone.now()
    with transaction.atomic():
        found = {
            (r.prediction_id, r.row): r
            for r in PredictionRecord.objects.select_for_update().filter(
                model=model, prediction_id__in={item.prediction_id for item in items}
            )
        }
        rows_of = {prediction_id: r.rows for (prediction_id, _), r in found.items()}
        unknown, invalid, changed = [], [], {}
        for index, item in enumerate(items):
            rows = rows_of.get(item.prediction_id)
            if rows is None:
                message = f"no recorded prediction {item.prediction_id} of model {model.name!r}"
                unknown.append(_problem(index, item, message))
                continue
            if item.row is None and rows > 1:
                message = f"the prediction has {rows} rows: say which with 'row' (0-{rows - 1})"
                invalid.append(_problem(index, item, message))
                continue
            record = found.get((item.prediction_id, item.row or 0))
            if record is None:
                invalid.append(_problem(index, item, f"row {item.row} is out of range: the prediction has {rows} rows"))
                continue
            problem = _score(record, item.label)
            if problem is not None:
                invalid.append(_problem(index, item, problem))
                continue
            record.feedback, record.feedback_at = item.label, now
            changed[record.pk] = record
        if invalid:
            raise Invalid(f"feedback not recorded: {invalid[0]['field']}: {invalid[0]['msg']}",
                          details=invalid + unknown)
        if unknown:
            raise UnknownPrediction(f"feedback not recorded: {unknown[0]['field']}: {unknown[0]['msg']}",
                                    details=unknown)
        PredictionRecord.objects.bulk_update(list(changed.values()), ["feedback", "feedback_at", "correct", "error"],
                                             batch_size=500)
    return len(changed)


# --- drift checks ----------------------------------------------------------------------------------


def _drift_event_on_commit(report: DriftReport, model_name: str, features: dict[str, float],
                           owner: str | None = None) -> None:
    """On ``model:<name>`` and, for the console's alerts, on ``user:<owner>``."""
    data = {"model": model_name, "version": report.version, "report_id": report.pk, "threshold": report.threshold,
            "sample_count": report.sample_count, "features": features, "trigger": report.trigger,
            "window": {"start": report.window_start.isoformat(), "end": report.window_end.isoformat()}}

    publish_on_commit(f"model:{model_name}", "drift", data)
    if owner is not None:
        publish_on_commit(f"user:{owner}", "drift", data)


def _drift_check_version(
    *, model: MlModel, version: int, reference: selectors.Reference, trigger: str, start: datetime, end: datetime,
    threshold: float,
) -> DriftReport:
    analysis = selectors.drift_analysis(model=model, version=version, reference=reference, start=start, end=end,
                                        threshold=threshold)
    with transaction.atomic():
        report = DriftReport.objects.create(
            model=model, version=version, trigger=trigger, window_start=start, window_end=end,
            sample_count=analysis["sample_count"], threshold=threshold, status=analysis["status"],
            drifted_features=analysis["drifted_features"], features=analysis["features"],
            predictions=analysis["predictions"],
        )
        if report.status == DriftStatus.DRIFT:
            psi = {f["feature"]: f["psi"] for f in analysis["features"] if f["drifted"]}
            _drift_event_on_commit(report, model.name, psi, owner=model.owner.username)
    return report


def drift_check(
    *, model: MlModel, actor: User, window: timedelta | None = None, version: int | None = None
) -> tuple[list[DriftReport], list[dict[str, Any]]]:
    """Checks now, for ``version`` or every version with raw records in the window (default
    DRIFT_WINDOW_SECONDS); stores a report per version checked and publishes ``drift`` on
    ``model:<name>`` for each past the threshold. Returns the reports and the versions skipped (why)."""
    if not (actor.has_role(Role.ADMIN) or model.owner_id == actor.pk):
        raise Forbidden("only the model's owner or an admin can run a drift check")
    end = timezone.now()
    start = end - (window or timedelta(seconds=settings.DRIFT_WINDOW_SECONDS))
    if version is not None:
        if not ModelVersion.objects.filter(model=model, number=version).exists():
            raise NotFound(f"model {model.name!r} has no version {version}")
        numbers = with_records = [version]
    else:
        numbers = selectors.versions_recorded(model=model, since=start)
        with_records = selectors.versions_recorded(model=model, since=start, records_only=True)
    references = selectors.version_references(model=model, numbers=numbers)
    if version is not None and version not in references:
        raise Invalid(f"version {version} has no training reference (only versions trained by Torchwire do); "
                      "drift cannot be checked")
    threshold = selectors.drift_threshold(model=model)
    reports, skipped = [], []
    for number in numbers:
        reference = references.get(number)
        if reference is None:
            skipped.append({"version": number, "reason": "no training reference (not trained by Torchwire)"})
            continue
        if number not in with_records:
            skipped.append({"version": number, "reason": "no raw-record predictions in the window"})
            continue
        reports.append(_drift_check_version(model=model, version=number, reference=reference, trigger=TRIGGER_API,
                                            start=start, end=end, threshold=threshold))
    return reports, skipped


def drift_check_scheduled() -> int:
    """The periodic check (Celery beat): every version with raw records in the last DRIFT_WINDOW_SECONDS
    and a training reference. A version checked by the schedule in the last half period is skipped,
    so a redelivered task does not report twice. Returns the number of reports stored."""
    end = timezone.now()
    start = end - timedelta(seconds=settings.DRIFT_WINDOW_SECONDS)
    recent = end - timedelta(seconds=settings.DRIFT_CHECK_SECONDS / 2)
    done = set(DriftReport.objects.filter(trigger=TRIGGER_SCHEDULE, created_at__gte=recent)
               .values_list("model_id", "version"))
    pending = sorted(selectors.recorded_pairs(since=start) - done)
    stored = 0
    for model in MlModel.objects.filter(pk__in={model_id for model_id, _ in pending}):
        numbers = [number for model_id, number in pending if model_id == model.pk]
        references = selectors.version_references(model=model, numbers=numbers)
        threshold = selectors.drift_threshold(model=model)
        for number, reference in sorted(references.items()):
            try:
                _drift_check_version(model=model, version=number, reference=reference, trigger=TRIGGER_SCHEDULE,
                                     start=start, end=end, threshold=threshold)
                stored += 1
            except Exception:
                logger.exception("scheduled drift check of %s version %s failed", model.name, number)
    return stored


def monitoring_trim() -> int:
    """Deletes monitoring rows older than MONITORING_RETENTION_DAYS, in chunks; returns how many."""
    cutoff = timezone.now() - timedelta(days=settings.MONITORING_RETENTION_DAYS)
    deleted = 0
    tables: list[tuple[type[models.Model], str]] = [
        (PredictionRecord, "created_at"), (RequestStats, "minute"), (DriftReport, "created_at"),
    ]
    for table, field in tables:
        while True:
            ids = list(table._default_manager.filter(**{f"{field}__lt": cutoff})
                       .values_list("pk", flat=True)[:TRIM_CHUNK])
            if not ids:
                break
            deleted += table._default_manager.filter(pk__in=ids).delete()[0]
    return deleted
