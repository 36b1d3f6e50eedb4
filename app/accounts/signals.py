"""Dropping cached principals (auth_cache.py) when a user or an API key changes by any path that saves
the row: the services, the Django admin, a shell. Only cache invalidation lives here, no business logic;
bulk ``update()`` sends no signal, so services that revoke that way drop them themselves. Both go through
`app.core.invalidation` (auth_cache.py listens there)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from app.core import invalidation

from .models import ApiKey, User

# Saves that cannot change whether or as whom a credential authenticates.
_HARMLESS_FIELDS = frozenset({"last_login", "last_used_at"})


@receiver(post_save, sender=User, dispatch_uid="accounts.forget_principals.user_saved")
@receiver(post_save, sender=ApiKey, dispatch_uid="accounts.forget_principals.api_key_saved")
def _saved(sender: type, instance: Any, created: bool, update_fields: frozenset[str] | None, **kwargs: Any) -> None:
    if created or (update_fields is not None and update_fields <= _HARMLESS_FIELDS):
        return
    invalidation.changed_on_commit(invalidation.CREDENTIALS)


@receiver(post_delete, sender=User, dispatch_uid="accounts.forget_principals.user_deleted")
@receiver(post_delete, sender=ApiKey, dispatch_uid="accounts.forget_principals.api_key_deleted")
def _deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    invalidation.changed_on_commit(invalidation.CREDENTIALS)
