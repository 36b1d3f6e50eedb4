from __future__ import annotations

from django.db.models import QuerySet

from .models import ApiKey, User


def api_key_list(*, user: User, active_only: bool = True) -> QuerySet[ApiKey]:
    qs = ApiKey.objects.filter(user=user)
    return qs.filter(revoked_at__isnull=True) if active_only else qs
