"""Invoices as the billing system pushes them: create, replace, list, read.

A push is always a full replacement (billing systems resend the whole invoice). What makes it safe:
- an identical resend is recognised by a hash of its canonical content and writes nothing; a batch item
  that is byte for byte (after parsing) the body that made the stored revision is recognised before it is
  even validated, by its fingerprint (see `recognise_resends`);
- `version`, when the billing system sends one, only moves forward: lower, or equal with other content, is
  a 409 (`stale_version`);
- money Quittance recorded is never undone silently: a resend that would reopen or cancel an invoice paid
  online, or lower its total below what was paid, is refused (409) and kept in `invoice_conflicts`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from portal.db.paging import page_by_id
from portal.db.bulk import insert_many, insert_new_many, list_param, one_of
from portal.db.customers import customers
from portal.db.invoices import invoice_conflicts, invoice_timeline, invoices
from portal.errors import Conflict, FieldError, InvalidInput, NotFound, QuittanceError

Status = Literal["draft", "open", "paid", "cancelled"]
# Refusals that protect recorded money are kept in the conflict queue; a stale version is only answered 409.
CONFLICT_QUEUE_CODES = frozenset({"reopens_paid", "total_below_paid", "cancels_paid"})


@dataclass(frozen=True)
class InvoiceInput:
    """A validated invoice in storage form: amounts in minor units, lines as stored JSON."""

    external_id: str
    customer: str
    number: str | None
    kind: str
    status: str
    issue_date: dt.date | None
    due_date: dt.date | None
    payment_terms: str | None
    payment_terms_days: int | None
    currency: str
    total_minor: int
    amount_due_minor: int
    lines: list[dict[str, Any]]
    title: str | None = None
    header_note: str | None = None
    footer_note: str | None = None
    vat_mention: str | None = None
    delivery_date: dt.date | None = None
    store: str | None = None
    may_have_documents: bool = True
    version: int | None = field(default=None, compare=False)

    @classmethod
    def of(cls, values: dict[str, Any]) -> InvoiceInput:
        """InvoiceInput(**values) with every field given, the dict becoming the instance's own: without the
        frozen __init__, which sets each of the 21 fields through object.__setattr__ (4 us against 1, a
        twentieth of a batch push's CPU per invoice). The caller gives the dict up."""
        if values.keys() != _INPUT_FIELDS:
            raise TypeError(f"InvoiceInput.of needs exactly the fields {sorted(_INPUT_FIELDS)}")
        item = object.__new__(cls)
        object.__setattr__(item, "__dict__", values)
        return item

    def content_hash(self) -> str:
        content = self._fields()
        del content["version"]
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def storage_values(self) -> dict[str, Any]:
        values = self._fields()
        del values["customer"]
        return values

    def _fields(self) -> dict[str, Any]:
        # What dataclasses.asdict gives, without its deep copy of every line (the values are only serialized,
        # so the bytes hashed are the same and stored hashes stay valid): the instance dict of a plain frozen
        # dataclass holds exactly its fields, and copying it is ten times cheaper than reading them one by one.
        return self.__dict__.copy()


_INPUT_FIELDS = frozenset(f.name for f in fields(InvoiceInput))


@dataclass(frozen=True)
class WriteOutcome:
    external_id: str
    result: Literal["created", "updated", "unchanged", "error"]
    invoice_id: int | None = None
    revision: int | None = None
    error: QuittanceError | None = None


def _written(external_id: str, result: Literal["created", "updated", "unchanged"], invoice_id: int,
             revision: int) -> WriteOutcome:
    """WriteOutcome(external_id, result, invoice_id, revision) without the frozen __init__: one per item of
    every batch, pushed or recognised."""
    outcome = object.__new__(WriteOutcome)
    object.__setattr__(outcome, "__dict__", {"external_id": external_id, "result": result,
                                             "invoice_id": invoice_id, "revision": revision, "error": None})
    return outcome


@dataclass(frozen=True)
class Resent:
    """A batch item that `recognise_resends` found to be the body that made the stored revision: it stands
    in for the converted item in `upsert_invoices`, which answers "unchanged" if the row is still as found."""

    external_id: str
    body_digest: str


class ResentChanged(Exception):
    """Raised by `upsert_invoices` before it writes anything: rows of `Resent` items changed since they were
    recognised. The caller converts those items and runs the batch again."""

    def __init__(self, external_ids: list[str]) -> None:
        super().__init__(f"changed since recognised: {', '.join(external_ids)}")
        self.external_ids = external_ids


def canonical_json(raw: dict[str, Any]) -> bytes:
    """A batch item as parsed, in canonical JSON (sorted keys): equal for equal bodies."""
    return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)


def body_digest(canonical: bytes) -> str:
    """SHA-256 of an item's `canonical_json`, in hex, cut to 192 bits (48 characters: it only has to tell a
    billing system's bodies of one invoice apart, and leaves room for the revision in the column)."""
    return hashlib.sha256(canonical).hexdigest()[:48]


def _fingerprint(revision: int, digest: str) -> str:
    """What `invoices.body_fingerprint` holds: the body digest bound to the revision it produced,
    "<revision>:<digest>". Every change to an invoice adds one to its revision (pushes, PATCH, lifecycle
    steps, documents), so any change made since, by any writer, leaves a fingerprint that no longer
    matches, without that writer knowing of it. Payments do not change the revision: they are caught by
    `paid_minor` (_is_resend)."""
    return f"{revision}:{digest}"


def _is_resend(row: sa.Row[Any], digest: str) -> bool:
    """The item is the body that made the row's current revision, and nothing was paid online: then the
    full path would find no paid conflict and an equal content hash, so the answer is "unchanged"."""
    return row.paid_minor == 0 and row.body_fingerprint == _fingerprint(row.revision, digest)


def _depends_on_today(item: InvoiceInput) -> bool:
    """The due date is derived from the terms counted from today (no issue or due date): the same body
    converts differently another day, so it gets no fingerprint."""
    return (item.due_date is None and item.issue_date is None and item.status != "draft"
            and item.payment_terms is not None)


def due_date_from_terms(terms: str | None, days: int | None, start: dt.date) -> dt.date | None:
    """The due date that payment terms give when counting starts on `start`; None for custom terms."""
    if terms == "at_reception":
        return start
    if terms == "net_days":
        return start + dt.timedelta(days=days or 0)
    if terms == "end_of_month":
        shifted = start + dt.timedelta(days=days or 0)
        return shifted.replace(day=calendar.monthrange(shifted.year, shifted.month)[1])
    return None


def with_derived_due_date(item: InvoiceInput, today: dt.date) -> InvoiceInput:
    """A non-draft invoice without a due date gets one from its terms, counted from its issue date."""
    if item.due_date is not None or item.status == "draft" or item.payment_terms is None:
        return item
    return _with_due_date(item, due_date_from_terms(item.payment_terms, item.payment_terms_days,
                                                    item.issue_date or today))


def _with_due_date(item: InvoiceInput, due_date: dt.date | None) -> InvoiceInput:
    """dataclasses.replace(item, due_date=due_date), without running the frozen __init__ over every field
    again (a sixth of the CPU of an unchanged re-push): the other fields are copied as they are."""
    derived = object.__new__(InvoiceInput)
    object.__setattr__(derived, "__dict__", {**item.__dict__, "due_date": due_date})
    return derived


def _paid_conflict(existing: sa.Row[Any], item: InvoiceInput) -> Conflict | None:
    """A resend must not undo what Quittance recorded as paid."""
    paid = existing.paid_minor
    if paid <= 0:
        return None
    if item.total_minor < paid:
        return Conflict(
            f"the new total is below the {paid} (minor units) Quittance recorded as paid", code="total_below_paid")
    fully_paid = paid >= existing.total_minor
    if fully_paid and item.status in ("draft", "open"):
        return Conflict("the invoice was paid online; a resend cannot reopen it", code="reopens_paid")
    if item.status == "cancelled":
        return Conflict("a payment was recorded on this invoice; it cannot be cancelled", code="cancels_paid")
    return None


def _version_conflict(existing: sa.Row[Any], item: InvoiceInput) -> Conflict | None:
    if item.version is None or existing.version is None or item.version > existing.version:
        return None
    return Conflict(
        f"version {item.version} is not newer than the stored version {existing.version}", code="stale_version")


_EXISTING_COLUMNS = (
    invoices.c.id, invoices.c.external_id, invoices.c.status, invoices.c.total_minor, invoices.c.paid_minor,
    invoices.c.version, invoices.c.revision, invoices.c.content_hash, invoices.c.activated_at,
    invoices.c.cancelled_at, invoices.c.body_fingerprint,
)


@dataclass(frozen=True)
class _Lookups:
    """The batch's lookups by a list of external ids, built once per dialect (see bulk.one_of): built per
    call, each coerced its thousand ids one by one and computed a cache key over them."""

    customer_ids: sa.Select[Any]
    existing: sa.Select[Any]
    resend_candidates: sa.Select[Any]
    new_ids: sa.Select[Any]


@functools.cache
def _lookups(dialect: Dialect) -> _Lookups:
    in_batch = one_of(dialect, invoices.c.external_id, "external_ids")
    of_organization = invoices.c.organization_id == sa.bindparam("organization_id")
    existing = sa.select(*_EXISTING_COLUMNS).where(of_organization, in_batch).order_by(invoices.c.id)
    return _Lookups(
        customer_ids=sa.select(customers.c.external_id, customers.c.id).where(
            customers.c.organization_id == sa.bindparam("organization_id"),
            one_of(dialect, customers.c.external_id, "external_ids")),
        # Lock the rows we compare against on PostgreSQL, so two concurrent resends cannot both pass the checks.
        existing=existing.with_for_update() if dialect.name == "postgresql" else existing,
        resend_candidates=sa.select(
            invoices.c.external_id, invoices.c.id, invoices.c.revision, invoices.c.paid_minor,
            invoices.c.body_fingerprint).where(of_organization, in_batch),
        new_ids=sa.select(invoices.c.external_id, invoices.c.id).where(of_organization, in_batch),
    )


_SET_FINGERPRINT = invoices.update().where(invoices.c.id == sa.bindparam("_id")).values(
    body_fingerprint=sa.bindparam("body_fingerprint"))


def recognise_resends(conn: sa.Connection, organization_id: int,
                      bodies: Sequence[tuple[str, str] | None]) -> list[WriteOutcome | None]:
    """For each (external id, body digest), "unchanged" if it is the body that made the invoice's current
    revision and nothing was paid online (`_is_resend`), else None; one lookup for the batch.

    Most of a batch push's work is validating and converting bodies before their content hash can be
    compared; a billing system's nightly resend is mostly bodies it sent before, and this tells them apart
    first. Only a body the batch API stored with its revision matches (`upsert_invoices`, `body_digests`),
    and not one whose due date is counted from the day of the push (`_depends_on_today`)."""
    wanted = list({pair[0] for pair in bodies if pair is not None})
    if not wanted:
        return [None] * len(bodies)
    if conn.dialect.name == "postgresql":
        _plan_for_these_ids(conn)
    rows = {row.external_id: row for row in conn.execute(_lookups(conn.dialect).resend_candidates, {
        "organization_id": organization_id, "external_ids": list_param(conn.dialect, wanted)})}
    outcomes: list[WriteOutcome | None] = []
    for pair in bodies:
        row = rows.get(pair[0]) if pair is not None else None
        if row is not None and pair is not None and _is_resend(row, pair[1]):
            outcomes.append(_written(row.external_id, "unchanged", row.id, row.revision))
        else:
            outcomes.append(None)
    return outcomes


def upsert_invoices(
    conn: sa.Connection, organization_id: int, items: Sequence[InvoiceInput | Resent], now: dt.datetime,
    *, raw_payloads: Sequence[dict[str, Any]] | None = None, body_digests: Sequence[str | None] | None = None,
) -> list[WriteOutcome]:
    """Create or replace each item; one outcome per item, in order. Items that fail do not stop the others.

    `raw_payloads` (same order) are the bodies as received, kept with any conflict they cause.
    `body_digests` (same order, batch API only) are their `body_digest`s: an item written, or found
    unchanged, keeps its digest bound to the revision (`_fingerprint`), so that the same body resent is
    recognised before it is validated. Writes without one clear the fingerprint. A `Resent` item is
    "unchanged" if its row is still as `recognise_resends` found it; if not, ResentChanged is raised before
    anything is written.
    """
    outcomes: list[WriteOutcome | None] = [None] * len(items)
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.external_id in seen:
            outcomes[index] = WriteOutcome(item.external_id, "error", error=InvalidInput(
                "the same external_id appears twice in this batch",
                [FieldError("/external_id", "duplicate in this batch")]))
        seen.add(item.external_id)

    if conn.dialect.name == "postgresql":
        _plan_for_these_ids(conn)
    lookups = _lookups(conn.dialect)
    wanted_customers = {item.customer for item in items if isinstance(item, InvoiceInput)}
    customer_ids = dict(conn.execute(lookups.customer_ids, {
        "organization_id": organization_id, "external_ids": list_param(conn.dialect, wanted_customers)}
    ).all()) if wanted_customers else {}
    existing_by_id = {row.external_id: row for row in conn.execute(lookups.existing, {
        "organization_id": organization_id, "external_ids": list_param(conn.dialect, seen)}).all()}

    inserts: list[dict[str, Any]] = []
    insert_indexes: list[int] = []
    updates: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    fingerprints: list[dict[str, Any]] = []
    changed: list[str] = []
    today = now.date()
    for index, item in enumerate(items):
        if outcomes[index] is not None:
            continue
        if isinstance(item, Resent):
            existing = existing_by_id.get(item.external_id)
            if existing is not None and _is_resend(existing, item.body_digest):
                outcomes[index] = _written(item.external_id, "unchanged", existing.id, existing.revision)
            else:
                changed.append(item.external_id)
            continue
        body = body_digests[index] if body_digests is not None else None
        if body is not None and _depends_on_today(item):
            body = None
        customer_id = customer_ids.get(item.customer)
        if customer_id is None:
            outcomes[index] = WriteOutcome(item.external_id, "error", error=InvalidInput(
                f"no customer {item.customer!r}; push it first with PUT /api/v1/customers/{{external_id}}",
                [FieldError("/customer", "unknown customer")]))
            continue
        item = with_derived_due_date(item, today)
        digest = item.content_hash()
        existing = existing_by_id.get(item.external_id)
        if existing is None:
            values = _row_values(item, customer_id, digest, now)
            values.update(organization_id=organization_id, revision=1, created_at=now, paid_minor=0,
                          body_fingerprint=_fingerprint(1, body) if body is not None else None,
                          activated_at=now if item.status != "draft" else None,
                          cancelled_at=now if item.status == "cancelled" else None)
            inserts.append(values)
            insert_indexes.append(index)
            continue
        # Paid protection comes first: even a resend identical to an earlier body must not reopen an
        # invoice that was paid online since.
        error = _paid_conflict(existing, item)
        if error is None and existing.content_hash == digest:
            outcomes[index] = _written(item.external_id, "unchanged", existing.id, existing.revision)
            if body is not None and existing.paid_minor == 0:
                # The same content sent as another body (or first sent before fingerprints, or since a
                # document changed the revision): bind this body to the revision, so its next resend is
                # recognised early. Content, revision and timeline stay as they are.
                fingerprint = _fingerprint(existing.revision, body)
                if existing.body_fingerprint != fingerprint:
                    fingerprints.append({"_id": existing.id, "body_fingerprint": fingerprint})
            continue
        error = error or _version_conflict(existing, item)
        if error is None and existing.activated_at is not None and item.status == "draft":
            error = Conflict("the invoice was activated; it cannot go back to draft", code="already_activated")
        if error is not None:
            if error.code in CONFLICT_QUEUE_CODES:
                payload = raw_payloads[index] if raw_payloads else _jsonable(item)
                conflicts.append({"organization_id": organization_id, "invoice_id": existing.id,
                                  "created_at": now, "code": error.code, "detail": error.detail,
                                  "payload": payload})
            outcomes[index] = WriteOutcome(item.external_id, "error", existing.id, existing.revision, error)
            continue
        revision = existing.revision + 1
        values = _row_values(item, customer_id, digest, now)
        # Every update row carries the same keys: they go to the database as one executemany.
        values["activated_at"] = existing.activated_at or (now if item.status != "draft" else None)
        values["cancelled_at"] = (existing.cancelled_at or now) if item.status == "cancelled" else None
        values["body_fingerprint"] = _fingerprint(revision, body) if body is not None else None
        updates.append({**values, "_id": existing.id, "revision": revision})
        outcomes[index] = _written(item.external_id, "updated", existing.id, revision)
    if changed:
        raise ResentChanged(changed)

    timeline: list[dict[str, Any]] = []
    if inserts:
        new_ids = _insert_invoices(conn, organization_id, inserts)
        lost = [index for index in insert_indexes if items[index].external_id not in new_ids]
        for index in insert_indexes:
            new_id = new_ids.get(items[index].external_id)
            if new_id is not None:
                outcomes[index] = _written(items[index].external_id, "created", new_id, 1)
                timeline.append(_timeline_row(organization_id, new_id, now, "created", items[index]))
        if lost:
            # A concurrent push created these first (its insert won, ours did nothing): they are now existing
            # invoices, and are written as such, against the winner's rows.
            again = upsert_invoices(
                conn, organization_id, [items[i] for i in lost], now,
                raw_payloads=[raw_payloads[i] for i in lost] if raw_payloads else None,
                body_digests=[body_digests[i] for i in lost] if body_digests is not None else None)
            for index, outcome in zip(lost, again, strict=True):
                outcomes[index] = outcome
    if updates:
        _update_by_id(conn, updates)
        for row in updates:
            timeline.append({"organization_id": organization_id, "invoice_id": row["_id"], "occurred_at": now,
                             "kind": "updated", "detail": {"revision": row["revision"], "status": row["status"],
                                                           "version": row["version"]}})
    if timeline:
        insert_many(conn, invoice_timeline, timeline)
    if conflicts:
        _queue_conflicts(conn, organization_id, conflicts)
    if fingerprints:
        conn.execute(_SET_FINGERPRINT, fingerprints)
    return [outcome for outcome in outcomes if outcome is not None]


def _plan_for_these_ids(conn: sa.Connection) -> None:
    """The lookups of a batch test up to 1,000 external ids. From its fifth run on a connection psycopg
    prepares a statement, and PostgreSQL may then reuse a generic plan that compares every stored row with
    the ids one by one: with 30,000 invoices stored, a batch spent a second in two lookups. A plan made for
    the values at hand hashes the list (or probes the index). For this transaction only."""
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


def _row_values(item: InvoiceInput, customer_id: int, digest: str, now: dt.datetime) -> dict[str, Any]:
    # Built only for rows that will be written: an unchanged resend, the usual one, needs none of it. What
    # storage_values() gives, plus three columns, in one dict.
    values = {**item.__dict__, "customer_id": customer_id, "content_hash": digest, "updated_at": now}
    del values["customer"]
    return values


_LARGEST_ID = sa.select(sa.func.max(invoices.c.id))


def _insert_invoices(conn: sa.Connection, organization_id: int, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new invoices; their ids by external id. One executemany each: SQLAlchemy's own INSERT ...
    RETURNING of many rows sends, for SQLite, one INSERT per row; for PostgreSQL, one 1,000-row statement
    with 33,000 parameters, five to ten times slower than psycopg's pipelined executemany (bench/push_invoices.py).
    On PostgreSQL a concurrent push may insert the same invoice first: that row is left out here (ON CONFLICT
    DO NOTHING), and its id is not among those returned. SQLite has no such race: its write transactions take
    turns from their first statement (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        return dict(insert_new_many(conn, invoices, rows, unique=("organization_id", "external_id"),
                                    returning=("external_id", "id")))
    if conn.dialect.name != "sqlite":
        insert_many(conn, invoices, rows)
    else:
        # A write transaction on SQLite has the database to itself (BEGIN IMMEDIATE), and a rowid table
        # without AUTOINCREMENT gives each new row the largest id plus one: if the largest id moved by exactly
        # the number of rows, they got the ids after it, in order. Two reads of the largest id instead of a
        # thousand index probes (a microsecond an invoice with 100,000 stored); anything else (ids near the
        # 64-bit limit are drawn at random) reads the ids back.
        before = conn.execute(_LARGEST_ID).scalar() or 0
        insert_many(conn, invoices, rows)
        if conn.execute(_LARGEST_ID).scalar() == before + len(rows):
            return {row["external_id"]: before + offset for offset, row in enumerate(rows, start=1)}
    return dict(conn.execute(_lookups(conn.dialect).new_ids, {
        "organization_id": organization_id,
        "external_ids": list_param(conn.dialect, [row["external_id"] for row in rows])}).all())


def _queue_conflicts(conn: sa.Connection, organization_id: int, conflicts: list[dict[str, Any]]) -> None:
    """Keep refused resends for a person to see, once each: a billing system that resends the same body
    every night must not fill the queue with copies."""
    pending = {
        (row.invoice_id, row.code, orjson.dumps(row.payload, option=orjson.OPT_SORT_KEYS))
        for row in conn.execute(sa.select(
            invoice_conflicts.c.invoice_id, invoice_conflicts.c.code, invoice_conflicts.c.payload).where(
            invoice_conflicts.c.organization_id == organization_id, invoice_conflicts.c.resolved_at.is_(None),
            invoice_conflicts.c.invoice_id.in_({c["invoice_id"] for c in conflicts})))
    }
    fresh = []
    for conflict in conflicts:
        key = (conflict["invoice_id"], conflict["code"], orjson.dumps(conflict["payload"], option=orjson.OPT_SORT_KEYS))
        if key not in pending:
            pending.add(key)
            fresh.append(conflict)
    if fresh:
        conn.execute(invoice_conflicts.insert(), fresh)


def _timeline_row(organization_id: int, invoice_id: int, now: dt.datetime, kind: str,
                  item: InvoiceInput) -> dict[str, Any]:
    return {"organization_id": organization_id, "invoice_id": invoice_id, "occurred_at": now, "kind": kind,
            "detail": {"revision": 1, "status": item.status, "version": item.version}}


def _update_by_id(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Executemany UPDATE ... WHERE id = :_id, for rows that all carry the same keys."""
    columns = [key for key in rows[0] if key != "_id"]
    statement = invoices.update().where(invoices.c.id == sa.bindparam("_id")).values(
        {column: sa.bindparam(column) for column in columns})
    conn.execute(statement, rows)


def _jsonable(item: InvoiceInput) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(asdict(item)))


def input_from_row(row: sa.Row[Any], customer_external_id: str) -> InvoiceInput:
    """The stored invoice as the input that would produce it: the base of PATCH and of lifecycle changes."""
    return InvoiceInput(
        external_id=row.external_id, customer=customer_external_id, number=row.number, kind=row.kind,
        status=row.status, issue_date=row.issue_date, due_date=row.due_date, payment_terms=row.payment_terms,
        payment_terms_days=row.payment_terms_days, currency=row.currency, total_minor=row.total_minor,
        amount_due_minor=row.amount_due_minor, lines=row.lines, title=row.title, header_note=row.header_note,
        footer_note=row.footer_note, vat_mention=row.vat_mention, delivery_date=row.delivery_date,
        store=row.store, may_have_documents=row.may_have_documents, version=row.version,
    )


def invoice_query(organization_id: int) -> sa.Select[Any]:
    """Invoices with their customer's external id, always scoped to one organization."""
    return (
        sa.select(invoices, customers.c.external_id.label("customer_external_id"))
        .join(customers, customers.c.id == invoices.c.customer_id)
        .where(invoices.c.organization_id == organization_id)
    )


def get_invoice(conn: sa.Connection, organization_id: int, external_id: str, *, lock: bool = False) -> sa.Row[Any]:
    query = invoice_query(organization_id).where(invoices.c.external_id == external_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=invoices)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no invoice {external_id!r}")
    return row


def get_invoice_by_id(conn: sa.Connection, organization_id: int, invoice_id: int) -> sa.Row[Any]:
    row = conn.execute(invoice_query(organization_id).where(invoices.c.id == invoice_id)).first()
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return row


@dataclass(frozen=True)
class InvoiceFilter:
    customer: str | None = None
    status: str | None = None
    updated_since: dt.datetime | None = None
    has_document: bool | None = None
    may_have_documents: bool | None = None


def list_invoices(
    conn: sa.Connection, organization_id: int, filters: InvoiceFilter, *, after_id: int, limit: int,
) -> tuple[list[sa.Row[Any]], int | None]:
    """One page in id order (stable: an update never moves an invoice), and the id to continue after."""
    query = invoice_query(organization_id).where(invoices.c.id > after_id)
    if filters.customer is not None:
        query = query.where(customers.c.external_id == filters.customer)
    if filters.status is not None:
        query = query.where(invoices.c.status == filters.status)
    if filters.updated_since is not None:
        query = query.where(invoices.c.updated_at >= filters.updated_since)
    if filters.has_document is not None:
        column = invoices.c.document_sha256
        query = query.where(column.is_not(None) if filters.has_document else column.is_(None))
    if filters.may_have_documents is not None:
        query = query.where(invoices.c.may_have_documents == filters.may_have_documents)
    return page_by_id(conn, query, invoices.c.id, limit)


def timeline_of(conn: sa.Connection, organization_id: int, invoice_id: int) -> list[sa.Row[Any]]:
    return conn.execute(
        sa.select(invoice_timeline).where(
            invoice_timeline.c.organization_id == organization_id, invoice_timeline.c.invoice_id == invoice_id)
        .order_by(invoice_timeline.c.id)
    ).all()


def conflict_query(organization_id: int) -> sa.Select[Any]:
    return (
        sa.select(invoice_conflicts, invoices.c.external_id.label("invoice_external_id"))
        .join(invoices, invoices.c.id == invoice_conflicts.c.invoice_id)
        .where(invoice_conflicts.c.organization_id == organization_id)
    )


def conflicts_of(conn: sa.Connection, organization_id: int, invoice_id: int) -> list[sa.Row[Any]]:
    return conn.execute(
        conflict_query(organization_id).where(invoice_conflicts.c.invoice_id == invoice_id)
        .order_by(invoice_conflicts.c.id)
    ).all()


def list_conflicts(conn: sa.Connection, organization_id: int, *, unresolved_only: bool, after_id: int,
                   limit: int) -> tuple[list[sa.Row[Any]], int | None]:
    query = conflict_query(organization_id).where(invoice_conflicts.c.id > after_id)
    if unresolved_only:
        query = query.where(invoice_conflicts.c.resolved_at.is_(None))
    return page_by_id(conn, query, invoice_conflicts.c.id, limit)


# Built once: record_timeline runs on every payment webhook, and building `.values(...)` and its cache key on
# each call cost more (about 100 us) than the INSERT itself. The parameters name every column, so the
# compiled form is the same each time; a None detail is stored as JSON null, as `.values(detail=None)` did.
_INSERT_TIMELINE = invoice_timeline.insert()


def record_timeline(conn: sa.Connection, organization_id: int, invoice_id: int, now: dt.datetime, kind: str,
                    detail: dict[str, Any] | None = None) -> None:
    conn.execute(_INSERT_TIMELINE, {"organization_id": organization_id, "invoice_id": invoice_id,
                                    "occurred_at": now, "kind": kind, "detail": detail})


def resolve_conflict(conn: sa.Connection, organization_id: int, conflict_id: int, now: dt.datetime) -> sa.Row[Any]:
    conn.execute(invoice_conflicts.update().where(
        invoice_conflicts.c.organization_id == organization_id, invoice_conflicts.c.id == conflict_id,
        invoice_conflicts.c.resolved_at.is_(None)).values(resolved_at=now))
    row = conn.execute(conflict_query(organization_id).where(invoice_conflicts.c.id == conflict_id)).first()
    if row is None:
        raise NotFound(f"no conflict {conflict_id}")
    return row
