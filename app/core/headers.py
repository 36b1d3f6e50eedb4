"""The security headers of every answer, in one place: `SecurityHeadersMiddleware` puts them on what Django
answers and `app.serving.fastpath` on what it answers itself, so the two cannot differ.

Content-Security-Policy: an API answer (JSON, CSV, an event stream) may load nothing at all; an HTML page
(the Django admin, the API docs) only this site's own scripts, styles, images and fonts, with no inline
script or style and no framing. nginx adds the same headers only to what it answers itself
(nginx/security-headers.conf), so a page's policy is never narrowed by a second one.
"""

from __future__ import annotations

from django.conf import settings

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
PAGE_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # Swagger UI's and the admin's icons are data: URLs in their CSS
    "font-src 'self'",
    "connect-src 'self'",  # the docs fetch openapi.json and send "Try it out" requests
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])
# The HTML pages: the Django admin and the API docs (whose own assets are static files).
ADMIN_PREFIX = "/admin/"
DOCS_PATH = "/api/v1/docs"


def content_security_policy(path: str) -> str:
    return PAGE_POLICY if path.startswith(ADMIN_PREFIX) or path == DOCS_PATH else API_POLICY


def security_headers(path: str) -> list[tuple[str, str]]:
    """Every security header an answer for ``path`` carries, HSTS aside (it depends on the request's scheme
    and is SecurityMiddleware's, or the fast path's, to add)."""
    headers = [("Content-Security-Policy", content_security_policy(path)),
               ("X-Frame-Options", settings.X_FRAME_OPTIONS)]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers
