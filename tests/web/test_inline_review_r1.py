"""Review findings on inline mode: each test failed before its fix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from inline_support import BODY, Rig

from appintegrity.encoding import b64_encode
from appintegrity.errors import ServiceError
from appintegrity.store import DeviceKey
from appintegrity.testing.ios import SoftwareIPhone
from appintegrity.web.inline import (
    ASSERTION_HEADER,
    KEY_ID_HEADER,
    PLAY_INTEGRITY_HEADER,
    DeviceProof,
    _play_token_id,
)

OTHER_APP = "TEAM999999.com.example.other"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


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
