"""What a request handler needs, built once per app from Settings: the database, the clock, file storage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from portal.clock import Clock
from portal.db import Database
from portal.providers.registry import ProviderRegistry
from portal.settings import Settings
from portal.storage import DocumentStore
from portal.tokens import TokenService


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    clock: Clock
    documents: DocumentStore
    tokens: TokenService
    providers: ProviderRegistry

    def now(self) -> dt.datetime:
        return self.clock.now()
