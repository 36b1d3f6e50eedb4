from django.urls import path, re_path

from realtime.auth import WebsocketAuthMiddleware
from realtime.consumers import EchoConsumer, InferConsumer, NotFoundConsumer
from realtime.events import EventsConsumer

from channels.routing import URLRouter  # isort: skip

websocket_urlpatterns = [
    path("ws/v1/echo", EchoConsumer.as_asgi()),
    path("ws/v1/infer", InferConsumer.as_asgi()),
    path("ws/v1/events", EventsConsumer.as_asgi()),
    re_path(r"^.*$", NotFoundConsumer.as_asgi()),
]

websocket_application = WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns))
