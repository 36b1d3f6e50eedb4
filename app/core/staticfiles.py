"""Static files on `make run` (`TORCHWIRE_SERVE_STATIC`; in production nginx serves them)."""

from __future__ import annotations

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, Http404, HttpRequest


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's handler, answering 404 for every path that names no static file.

    Django turns only a missing file into a 404: a path that climbs out of the static roots
    (``/static/..%2f..%2fetc%2fpasswd``: `SuspiciousFileOperation`) escapes its handler as a 500 with a
    traceback. Nothing outside the roots is ever read either way.
    """

    def serve(self, request: HttpRequest) -> FileResponse:
        try:
            return super().serve(request)
        except (SuspiciousOperation, ValueError) as exc:
            raise Http404("no such static file") from exc
