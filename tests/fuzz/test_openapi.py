"""A short schemathesis run over /api/v1 as a member and as an admin (`make fuzz` runs a longer one).

It fails on a server error, an answer the OpenAPI document does not declare (status, content type,
headers, body schema), a schema-valid request refused or a schema-violating one accepted, and on any
traceback in the log of the server it fuzzed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fuzz import runner
from tests.support import Server, start_uvicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(600)]

# Bounded for `make test` on a small machine: a few examples per operation and phase.
MAX_EXAMPLES = 4
SEED = 20261126


@pytest.fixture(scope="module")
def fuzz_server(service_env: dict[str, str]) -> Iterator[Server]:
    """A server of its own, so its log holds only what the fuzzer caused."""
    srv = start_uvicorn(service_env)
    yield srv
    srv.stop()


def test_schemathesis_finds_nothing_as_member_or_admin(fuzz_server: Server, make_user) -> None:
    users = []
    for role in ("member", "admin"):
        account = make_user(role)
        users.append(runner.User(username=account.username, password=account.password, role=role))
    member, admin = users
    seeded = runner.seed(fuzz_server.url, admin)

    def fuzz(user: runner.User) -> runner.Outcome:
        return runner.fuzz(fuzz_server.url, user, max_examples=MAX_EXAMPLES, seed=SEED,
                           extra_config=seeded.config())

    # Both at once: each waits on the server most of the time.
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(fuzz, (member, admin)))
    for outcome in outcomes:
        assert outcome.passed, f"schemathesis as {outcome.user.role}:\n{outcome.output[-20000:]}"
    log = fuzz_server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-20000:]
