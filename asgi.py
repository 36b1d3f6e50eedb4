"""The one ASGI application: HTTP to Django, websockets to Channels, lifespan to `COMPONENTS`."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

from django.conf import settings
from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (consumers, auth middleware).
django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

import realtime.app_topics  # noqa: E402, F401  (job and model topics)
from app.core import db  # noqa: E402
from app.core.console import ConsoleBridge  # noqa: E402
from app.core.lifecycle import ASGIApp, Component, LifespanApp  # noqa: E402
from app.core.staticfiles import StaticFilesHandler  # noqa: E402
from app.events import relay  # noqa: E402
from app.monitoring import metrics, recording  # noqa: E402
from app.serving import livestats, runtime  # noqa: E402
from app.serving.fastpath import InferenceFastPath  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402

django_app = StaticFilesHandler(django_http) if settings.SERVE_STATIC else django_http
# The two hot inference routes skip Django's request cycle; everything else goes to Django.
http_app: ASGIApp = InferenceFastPath(django_app)
console: ConsoleBridge | None = None
if settings.CONSOLE_URL:
    # The console's pages, assets and route handlers: every path that is not the backend's.
    http_app = console = ConsoleBridge(http_app, settings.CONSOLE_URL, settings.CONSOLE_STATIC)

# What this process starts, in this order, and stops in the reverse order, after /readyz turned 503
# (app/core/lifecycle.py). Each stops before what it relies on: the console proxy first; the serving
# pool drains its batchers while the recorder still takes their outcomes; the recorder writes what is
# left; the pool sampler and the events relay go last.
COMPONENTS: list[Component] = [
    Component("database outage breaker", start=db.outage_watch),
    Component("events relay loop", start=relay.relay_loop_start, stop=relay.relay_loop_stop),
    Component("database pool sampler", start=metrics.sampler_start, stop=metrics.sampler_stop),
    Component("prediction recorder", stop=recording.recorder.close),
    Component("serving pool", start=runtime.pool_start, stop=runtime.pool_stop),
    # Started by the first request it counts; stopped before the pool drains.
    Component("serving stats reporter", stop=livestats.stop),
]
if console is not None:
    COMPONENTS.append(Component("console proxy", stop=console.aclose))

application = LifespanApp(ProtocolTypeRouter({"http": http_app, "websocket": websocket_application}), COMPONENTS)
