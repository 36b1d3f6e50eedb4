"""Fixtures of the job tests that monitoring tests reuse: uploading a training CSV."""

from __future__ import annotations

from tests.jobs.conftest import upload_csv

__all__ = ["upload_csv"]
