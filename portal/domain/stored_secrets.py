"""Every secret Quittance keeps in its database, checked at start-up and re-encrypted on rotation:
organizations' provider keys and webhook secrets (payment_settings), and connectors' settings."""

from __future__ import annotations

import sqlalchemy as sa

from portal.domain import connectors, payment_settings
from portal.encryption import SecretBox


def check_all(conn: sa.Connection, box: SecretBox) -> None:
    """Raise EncryptionKeyError (naming PORTAL_ENCRYPTION_KEYS) unless every stored secret opens."""
    payment_settings.check_keys(conn, box)
    connectors.check_keys(conn, box)


def reseal_all(conn: sa.Connection, box: SecretBox) -> int:
    """Re-encrypt everything with the newest key; how many rows changed."""
    return payment_settings.reseal(conn, box) + connectors.reseal(conn, box)
