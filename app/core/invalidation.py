"""The one way a change drops what each process caches about it: ``changed_on_commit(cache, key)``.

A cache registers a listener for its name when its module is imported (``on_change``); a service that
changes what the cache holds calls ``changed_on_commit`` inside its transaction, and the listeners run in
this process once that commits (never on a rollback). The service need not import the cache, so the
cache may import the service (as `app.accounts.auth_cache` does) without a cycle, and a process that never
imported a cache has nothing to drop. Other processes see the change when their entries expire.

Listeners run on the thread that commits, in registration order; they must be quick and thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from django.db import transaction

# The caches: who changes them is free to name them without importing their owners.
CREDENTIALS = "credentials"  # app.accounts.auth_cache: key None, every principal
MODEL = "model"  # app.serving.runtime: key (model name, version number or None)
SAMPLING = "sampling"  # app.monitoring.recording: key (model id, sample rate or None)

Listener = Callable[[Hashable], None]
_listeners: dict[str, list[Listener]] = {}


def on_change(cache: str, listener: Listener) -> None:
    """Calls ``listener(key)`` after each committed change to ``cache``. Registering twice is a no-op."""
    listeners = _listeners.setdefault(cache, [])
    if listener not in listeners:
        listeners.append(listener)


def changed(cache: str, key: Hashable = None) -> None:
    """Runs the listeners of ``cache`` now (outside a transaction, or from an on-commit hook)."""
    for listener in list(_listeners.get(cache, ())):
        listener(key)


def changed_on_commit(cache: str, key: Hashable = None) -> None:
    """Runs the listeners of ``cache`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: changed(cache, key))
