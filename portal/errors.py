"""The domain error tree. No HTTP in here: `portal.web.errors` maps each branch to a status once.

    QuittanceError
     ├── NotFound            the object does not exist for this organization (or at all: we never say which)
     ├── InvalidInput        the request is well-formed but a field is wrong; carries one FieldError per field
     ├── Conflict            the request fights the current state (stale version, paid invoice, wrong status)
     └── Unauthenticated     no usable credentials
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One offending field: `path` is a JSON Pointer into the request body ("/lines/0/unit_price")."""

    path: str
    message: str

    def under(self, prefix: str) -> FieldError:
        return FieldError(prefix + self.path, self.message)


class QuittanceError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(QuittanceError):
    pass


class Unauthenticated(QuittanceError):
    pass


class InvalidInput(QuittanceError):
    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class Conflict(QuittanceError):
    """`code` is a stable machine-readable reason, e.g. "stale_version" or "paid_invoice"."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code
