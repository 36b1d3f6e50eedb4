"""The one ASGI application: HTTP to Django, websockets to Channels, lifespan to our hooks."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

from django.conf import settings
from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (consumers, auth middleware).
django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

import app.serving.runtime  # noqa: F401, E402  (registers the serving pool's lifespan hooks)
import realtime.app_topics  # noqa: E402, F401  (job and model topics)
from app.core.console import ConsoleBridge  # noqa: E402
from app.core.lifecycle import ASGIApp, LifespanApp  # noqa: E402
from app.core.staticfiles import StaticFilesHandler  # noqa: E402
from app.serving.fastpath import InferenceFastPath  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402

django_app = StaticFilesHandler(django_http) if settings.SERVE_STATIC else django_http
# The two hot inference routes skip Django's request cycle; everything else goes to Django.
http_app: ASGIApp = InferenceFastPath(django_app)
if settings.CONSOLE_URL:
    # The console's pages, assets and route handlers: every path that is not the backend's.
    http_app = ConsoleBridge(http_app, settings.CONSOLE_URL, settings.CONSOLE_STATIC)

application = LifespanApp(ProtocolTypeRouter({"http": http_app, "websocket": websocket_application}))
