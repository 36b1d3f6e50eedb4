"""Realtime events through a transactional outbox: ``services.publish_on_commit`` (docs/events.md)."""
