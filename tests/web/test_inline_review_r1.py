"""Review findings on inline mode: each test failed before its fix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inline_support import ANDROID_APP, BODY, Rig

from appintegrity.encoding import b64_encode
from appintegrity.errors import ServiceError
from appintegrity.google import PlayIntegrityPolicy, PlayIntegrityVerifier
from appintegrity.google.nonce import request_hash
from appintegrity.store import DeviceKey, open_store
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.ios import SoftwareIPhone
from appintegrity.web.inline import (
    ASSERTION_HEADER,
    KEY_ID_HEADER,
    PLAY_INTEGRITY_HEADER,
    DeviceProof,
    InlineVerifier,
    _play_token_id,
)

OTHER_APP = "TEAM999999.com.example.other"


def _verify(rig: Rig, headers: dict[str, str], body: bytes = BODY) -> DeviceProof:
    lowered = {name.lower(): value for name, value in headers.items()}
    return asyncio.run(rig.verifier.verify(lowered, body))


def test_key_of_another_app_in_a_shared_store_is_refused(rig: Rig) -> None:
    # The store is shared with a service that also serves OTHER_APP; this backend's verifier
    # accepts only IOS_APP. The stored key's app id used to widen the verifier to OTHER_APP.
    phone = SoftwareIPhone(OTHER_APP, ca=rig.phone.ca)
    key_id = phone.generate_key()
    now = datetime.now(UTC)
    stored = DeviceKey(
        key_id=key_id,
        app_id=OTHER_APP,
        platform="ios",
        public_key=phone.public_key(key_id),
        counter=0,
        environment="production",
        receipt=None,
        risk_metric=None,
        created_at=now,
        last_seen_at=now,
    )
    assert asyncio.run(rig.store.add_key(stored))
    headers = {
        KEY_ID_HEADER: key_id,
        ASSERTION_HEADER: b64_encode(phone.generate_assertion(key_id, BODY)),
    }
    with pytest.raises(ServiceError) as caught:
        _verify(rig, headers)
    assert caught.value.code == "apple.app_id_mismatch"
    assert caught.value.status == 401
    # The other app's key did not advance: nothing was accepted.
    after = asyncio.run(rig.store.get_key(key_id))
    assert after is not None and after.counter == 0


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_respelled_play_token_is_still_a_replay(rig: Rig) -> None:
    # The GCM tag is 16 bytes: 22 base64url characters, the last carrying 4 spare bits that
    # decoders ignore. Flipping one gives another text for the same token; the consumed-token
    # key used to be the text's hash, so the respelled token passed a second time.
    token = rig.play_headers()[PLAY_INTEGRITY_HEADER]
    *head, tag = token.split(".")
    assert len(tag) % 4 == 2
    respelled = ".".join([*head, tag[:-1] + _B64URL[_B64URL.index(tag[-1]) ^ 1]])
    assert respelled != token
    first = _verify(rig, {PLAY_INTEGRITY_HEADER: token})
    assert first.platform == "android"
    with pytest.raises(ServiceError) as caught:
        _verify(rig, {PLAY_INTEGRITY_HEADER: respelled})
    assert caught.value.code == "token.consumed"
    assert caught.value.status == 409


def test_play_token_id_tolerates_text_that_is_not_base64url() -> None:
    # Tokens decoded by Google's API are opaque here: any text still gets a stable id.
    assert _play_token_id("a.b!c.d") == _play_token_id("a.b!c.d")
    assert _play_token_id("a.b!c.d") != _play_token_id("a.b!c.e")


def test_play_token_is_remembered_while_it_is_still_fresh(tmp_path: Path) -> None:
    # A policy allowing tokens an hour old with the default 15-minute replay window: the
    # consumed record used to expire after 15 minutes, and the same token passed again.
    store = open_store(f"sqlite:///{tmp_path / 'window.db'}")
    device = SoftwareAndroidDevice(ANDROID_APP, keys=PlayIntegrityTestKeys.generate())
    policy = PlayIntegrityPolicy(
        package_name=ANDROID_APP,
        certificate_digests=(device.certificate_digest,),
        max_age_seconds=3600,
    )
    issued = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    clock = [issued]
    verifier = InlineVerifier(
        store,
        google=PlayIntegrityVerifier(policy, keys=device.keys.as_keys()),
        clock=lambda: clock[0],
    )
    token = device.request_integrity_token(request_hash=request_hash(BODY), now=issued)
    headers = {PLAY_INTEGRITY_HEADER.lower(): token}
    try:
        assert asyncio.run(verifier.verify(headers, BODY)).platform == "android"
        clock[0] = issued + timedelta(minutes=20)  # past the window, still fresh
        asyncio.run(store.purge_expired(clock[0]))  # as the store's periodic purge does
        with pytest.raises(ServiceError) as caught:
            asyncio.run(verifier.verify(headers, BODY))
        assert caught.value.code == "token.consumed"
        clock[0] = issued + timedelta(minutes=61)  # no longer fresh: stale, not consumed
        with pytest.raises(ServiceError) as caught:
            asyncio.run(verifier.verify(headers, BODY))
        assert caught.value.code == "google.stale"
    finally:
        verifier.close()
        asyncio.run(store.close())


_header_text = st.text(st.characters(max_codepoint=0xFF), max_size=120)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key_id=_header_text,
    assertion=_header_text | st.binary(max_size=90).map(b64_encode),
    token=_header_text,
)
def test_hostile_header_values_are_refused_with_a_service_error(
    rig: Rig, key_id: str, assertion: str, token: str
) -> None:
    # Header values as an ASGI server hands them over (latin-1): nothing but ServiceError.
    for headers in (
        {KEY_ID_HEADER: key_id, ASSERTION_HEADER: assertion},
        {KEY_ID_HEADER: rig.key_id, ASSERTION_HEADER: assertion},
        {PLAY_INTEGRITY_HEADER: token},
    ):
        try:
            _verify(rig, headers)
        except ServiceError as error:
            assert error.status in (401, 403, 409)
        else:
            raise AssertionError(f"accepted {headers!r}")
