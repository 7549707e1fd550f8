"""Schemathesis against the served /openapi.json: generated requests (valid and invalid by the
schema) never get a 5xx, and every error is the documented JSON error body."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .conftest import ADMIN_KEY, Kit, Service, start_service


@pytest.fixture(scope="module")
def fuzzed(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from start_service(kit, tmp_path_factory.mktemp("schemathesis"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_cause_a_server_error(
    fuzzed: Service, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    strategy = schema.as_strategy(generation_mode=mode)
    seen: set[str] = set()
    statuses: set[int] = set()

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        seen.add(case.operation.label)
        if case.path.startswith("/v1/admin") and data.draw(st.booleans()):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN_KEY}"}
        response = case.call(base_url=fuzzed.url)
        statuses.add(response.status_code)
        assert response.status_code < 500, (case.operation.label, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}, body
            assert isinstance(body["error"]["code"], str) and body["error"]["code"]
            assert isinstance(body["error"]["message"], str)

    run()
    assert len(seen) >= 8, seen
    if mode is GenerationMode.NEGATIVE:
        assert 400 in statuses, statuses
    else:
        assert statuses & {200, 201}, statuses
