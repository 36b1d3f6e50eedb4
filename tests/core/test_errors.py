import json

from django.test import RequestFactory

from app.api.v1 import api


def test_unhandled_exception_becomes_500_envelope_without_details():
    request = RequestFactory().get("/api/v1/anything")
    response = api.on_exception(request, RuntimeError("database password is hunter2"))
    assert response.status_code == 500
    body = json.loads(response.content)
    assert body["error"]["code"] == "internal_error"
    assert "hunter2" not in response.content.decode()
