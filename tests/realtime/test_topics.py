"""Topics are matched whole: "model:x\\n" is not "model:x", so reading model x gives no way into the events
of another model, and a malformed key is a refusal, never a server error."""

from __future__ import annotations

import pytest

from app.accounts.models import User
from app.registry.models import MlModel, Visibility
from realtime.bus import publish
from tests.conftest import off_loop
from tests.realtime.test_events import events_socket
from tests.serverlog import no_traceback
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def _private_model_named(name: str, owner_pk: int) -> None:
    # A row as an older release let it be created (names were matched with `$`).
    MlModel.objects.create(name=name, owner=User.objects.get(pk=owner_pk), visibility=Visibility.PRIVATE)


async def test_a_trailing_newline_names_no_other_topic(server, client, make_user):
    owner = make_user("maintainer")
    owner_token = login(client, owner)["access"]
    assert client.post("/api/v1/models", json={"name": "x", "visibility": "public"},
                       headers=bearer(owner_token)).status_code == 201
    off_loop(_private_model_named, "x\n", owner.pk)
    reader = login(client, make_user("member"))["access"]
    with no_traceback(server.log):
        async with events_socket(server, reader) as sock:
            for topic in ("model:x\n", "model:x\r\n", "model:x\x00", "job:1\n", "user:" + owner.username + "\n"):
                await sock.send(op="subscribe", topic=topic, since=None)
                answer = await sock.recv()
                assert answer["type"] == "error" and answer["code"] == "unknown_topic", (topic, answer)
            await sock.subscribe("model:x")  # the model the reader may see still works
            with pytest.raises(ValueError, match="not a topic"):  # nor can anything be published there
                await publish("model:x\n", "secret", {"leak": True})
            event = await publish("model:x", "visible", {})
            got = await sock.recv()
            assert got["topic"] == "model:x" and got["seq"] == event.seq, got
            await sock.nothing_more()


async def test_malformed_job_keys_are_refusals(server, client, make_user):
    reader = login(client, make_user("member"))["access"]
    with no_traceback(server.log):
        async with events_socket(server, reader) as sock:
            for topic in ("job:\u00b2", "job:\u0661", "job:01", "job:0", "job:" + "9" * 30, "job:-1"):
                await sock.send(op="subscribe", topic=topic, since=None)
                answer = await sock.recv()
                assert answer["type"] == "error" and answer["code"] == "forbidden", (topic, answer)
