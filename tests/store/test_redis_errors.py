"""Redis error replies: a server that cannot serve is a 503, a wrong command stays a bug.

The replies come from ``ErrorRedis``, a fake server on a real socket (the shared Redis must not be
driven out of memory or into read-only mode), and from exception instances built as redis-py
builds them from a reply.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    DataError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from appintegrity.errors import Code, StoreUnavailableError
from appintegrity.store import ChallengeRecord, open_store
from appintegrity.store.redis import _unavailable

from .fake_redis import ErrorRedis

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)

# The server's own words for each state in which it serves no command.
SERVER_STATES = [
    ("OOM", "OOM command not allowed when used memory > 'maxmemory'."),
    ("MISCONF", "MISCONF Redis is configured to save RDB snapshots, but it's currently unable "
     "to persist to disk. Commands that may modify the data set are disabled."),
    ("READONLY", "READONLY You can't write against a read only replica."),
    ("LOADING", "LOADING Redis is loading the dataset in memory"),
    ("BUSY", "BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
     "SHUTDOWN NOSAVE."),
    ("MASTERDOWN", "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set "
     "to 'no'."),
    ("NOREPLICAS", "NOREPLICAS Not enough good replicas to write."),
    ("CLUSTERDOWN", "CLUSTERDOWN The cluster is down"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "reply"), SERVER_STATES, ids=[c for c, _ in SERVER_STATES])
async def test_a_server_that_cannot_serve_is_unavailable_without_the_command_in_the_message(
    code: str, reply: str
) -> None:
    secret = secrets.token_urlsafe(16)
    async with ErrorRedis(reply) as server:
        store = open_store(f"{server.url}?timeout=1")
        try:
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                # a MULTI/EXEC pipeline: redis-py quotes the command (and the challenge) in
                # the error it raises
                "add_challenge": lambda: store.add_challenge(
                    ChallengeRecord(secret, "any", None, NOW, NOW + timedelta(minutes=5))
                ),
                "consume_challenge": lambda: store.consume_challenge(secret, NOW),  # a script
                "consume_token_id": lambda: store.consume_token_id(
                    secret, NOW + timedelta(hours=1), NOW
                ),
            }
            for name, call in calls.items():
                with pytest.raises(StoreUnavailableError) as caught:
                    await call()
                error = caught.value
                assert (error.code, error.status) == (Code.STORE_UNAVAILABLE, 503), name
                assert code in error.message, name
                assert secret not in str(error), name
                assert "HSET" not in error.message and "SET" not in error.message.split(), name
                # The redis-py error (which quotes the command) is not chained for a logger
                # to print.
                assert error.__cause__ is None, name
                assert error.__suppress_context__, name
        finally:
            await store.close()
        assert any(secret.encode() in part for cmd in server.commands for part in cmd)


@pytest.mark.parametrize(
    "reply",
    [
        "ERR wrong number of arguments for 'hset' command",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    ],
)
async def test_an_error_in_our_command_is_not_reported_as_unavailable(reply: str) -> None:
    async with ErrorRedis(reply) as server:
        store = open_store(f"{server.url}?timeout=1")
        try:
            with pytest.raises(ResponseError) as caught:
                await store.consume_token_id("jti", NOW + timedelta(hours=1), NOW)
            assert not isinstance(caught.value, StoreUnavailableError)
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OutOfMemoryError("command not allowed", status_code="OOM"), "OOM"),
        (ReadOnlyError("You can't write", status_code="READONLY"), "READONLY"),
        (BusyLoadingError("Redis is loading", status_code="LOADING"), "LOADING"),
        (ClusterDownError("The cluster is down", status_code="CLUSTERDOWN"), "CLUSTERDOWN"),
        (MasterDownError("Link with MASTER is down", status_code="MASTERDOWN"), "MASTERDOWN"),
        (ResponseError("Redis is configured to save", status_code="MISCONF"), "MISCONF"),
        (ResponseError("Redis is busy running a script", status_code="BUSY"), "BUSY"),
        (ResponseError("Not enough good replicas", status_code="NOREPLICAS"), "NOREPLICAS"),
        # as a pipeline annotates it: the command comes first
        (
            OutOfMemoryError(
                "Command # 1 (HSET app:c:SECRET p any) of pipeline caused error: "
                "command not allowed",
                status_code="OOM",
            ),
            "OOM",
        ),
        # a redis-py that records no status code: the class, or the reply's first word
        (OutOfMemoryError("command not allowed"), "OOM"),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), "MISCONF"),
    ],
)
def test_server_state_errors_map_to_unavailable_naming_only_the_error(
    error: Exception, expected: str
) -> None:
    mapped = _unavailable(error)
    assert isinstance(mapped, StoreUnavailableError)
    assert expected in mapped.message
    assert "SECRET" not in mapped.message
    assert "HSET" not in mapped.message


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("wrong number of arguments for 'hset' command", status_code="ERR"),
        ResponseError("Operation against a key holding the wrong kind", status_code="WRONGTYPE"),
        ResponseError("ERR Error running script: BUSYKEY something"),
        ResponseError("Command # 1 (SET k OOM) of pipeline caused error: ERR syntax error"),
        NoScriptError("No matching script", status_code="NOSCRIPT"),
        DataError("Invalid input of type: 'dict'"),
        ValueError("not a Redis error at all"),
    ],
)
def test_other_errors_are_not_mapped(error: Exception) -> None:
    assert _unavailable(error) is None
