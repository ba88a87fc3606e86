"""Signed tokens with one salt per purpose, so a token made for one door never opens another.

Keys rotate: the newest key signs, every listed key verifies. Tokens are signed, not encrypted, so they carry
only opaque ids (a link id), never names, emails or amounts. (Debtor sessions are not tokens: they are
random secrets kept server-side, portal.domain.sessions.) The clock is injectable so
that expiry is tested without sleeping.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from portal.clock import Clock
from portal.errors import QuittanceError


class InvalidToken(QuittanceError):
    """Bad signature, wrong purpose, expired, or malformed: callers show one generic answer for all."""


PORTAL_LINK = "debtor-portal-link"
PURPOSES = (PORTAL_LINK,)


class TokenService:
    def __init__(self, keys: tuple[str, ...], clock: Clock) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._clock = clock

        class ClockedSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock.now().timestamp())

        # itsdangerous signs with the last key and tries newest first. One serializer per purpose, built once.
        self._serializers = {purpose: URLSafeTimedSerializer(list(reversed(keys)), salt=purpose, signer=ClockedSigner)
                             for purpose in PURPOSES}

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return self._serializers[purpose]

    def sign(self, purpose: str, payload: Any) -> str:
        return str(self._serializer(purpose).dumps(payload))

    def verify(self, purpose: str, token: str, max_age_seconds: int) -> Any:
        if len(token) > 500:
            raise InvalidToken("token too long")
        serializer = self._serializer(purpose)
        try:
            payload, signed_at = serializer.loads(token, max_age=max_age_seconds, return_timestamp=True)
        except SignatureExpired as exc:
            raise InvalidToken("expired") from exc
        except BadData as exc:
            raise InvalidToken("bad token") from exc
        # itsdangerous checks age against the signer's clock; a token "from the future" is also refused.
        if signed_at.timestamp() > self._clock.now().timestamp() + 60:
            raise InvalidToken("issued in the future")
        return payload
