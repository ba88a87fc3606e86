"""Signed tokens: one purpose per salt, rotation, expiry on an injected clock."""

from __future__ import annotations

import pytest

from portal.clock import FrozenClock
from itsdangerous import URLSafeTimedSerializer

from portal.tokens import PORTAL_LINK, InvalidToken, TokenService
from tests.conftest import START


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def test_round_trip_and_purpose_separation(clock: FrozenClock) -> None:
    tokens = TokenService(("key-1",), clock)
    token = tokens.sign(PORTAL_LINK, {"l": 7})
    assert tokens.verify(PORTAL_LINK, token, 60) == {"l": 7}
    # The same key and payload signed for another purpose (the signed session cookies of earlier versions,
    # say) open no link.
    for other in ("debtor-session", "debtor-csrf"):
        with pytest.raises(InvalidToken):
            tokens.verify(PORTAL_LINK, URLSafeTimedSerializer("key-1", salt=other).dumps({"l": 7}), 60)


def test_any_flipped_character_is_refused(clock: FrozenClock) -> None:
    tokens = TokenService(("key-1",), clock)
    token = tokens.sign(PORTAL_LINK, {"l": 7})
    for position in range(len(token)):
        flipped = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1:]
        with pytest.raises(InvalidToken):
            tokens.verify(PORTAL_LINK, flipped, 60)


def test_rotation_newest_signs_all_verify_removed_key_fails(clock: FrozenClock) -> None:
    old = TokenService(("old",), clock).sign(PORTAL_LINK, {"l": 1})
    rotated = TokenService(("new", "old"), clock)
    assert rotated.verify(PORTAL_LINK, old, 60) == {"l": 1}
    fresh = rotated.sign(PORTAL_LINK, {"l": 2})
    assert TokenService(("new",), clock).verify(PORTAL_LINK, fresh, 60) == {"l": 2}
    with pytest.raises(InvalidToken):
        TokenService(("old",), clock).verify(PORTAL_LINK, fresh, 60)
    with pytest.raises(InvalidToken):
        TokenService(("new",), clock).verify(PORTAL_LINK, old, 60)


def test_expiry_to_the_second(clock: FrozenClock) -> None:
    tokens = TokenService(("key",), clock)
    token = tokens.sign(PORTAL_LINK, {"l": 1})
    clock.advance(seconds=100)
    assert tokens.verify(PORTAL_LINK, token, 100) == {"l": 1}
    clock.advance(seconds=1)
    with pytest.raises(InvalidToken):
        tokens.verify(PORTAL_LINK, token, 100)


def test_garbage_and_oversized_tokens(clock: FrozenClock) -> None:
    tokens = TokenService(("key",), clock)
    for junk in ("", "abc", "a.b.c", "x" * 600, "eyJsIjoxfQ..", "\u00e9\u00e9.\u00e9"):
        with pytest.raises(InvalidToken):
            tokens.verify(PORTAL_LINK, junk, 60)
