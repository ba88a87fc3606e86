"""Invoices as the billing system pushes them: create, replace, list, read.

A push is always a full replacement (billing systems resend the whole invoice). What makes it safe:
- an identical resend is recognised by a hash of its canonical content and writes nothing; a batch item
  that is byte for byte (after parsing) the body that made the stored revision is recognised before it is
  even validated, by its fingerprint (see `recognise_resends`);
- `version`, when the billing system sends one, only moves forward: lower, or equal with other content, is
  a 409 (`stale_version`);
- money Quittance recorded is never undone silently: a resend that would reopen or cancel an invoice paid
  online, or lower its total below what was paid, is refused (409) and kept in the conflict queue
  (`portal.domain.conflicts`).

A push is decided, then applied: `plan_upsert` is a pure function of the items and of what is stored (no
database), giving each item one decision (create, update, leave unchanged, refuse); `apply_plan` writes the
decisions in the caller's transaction. `upsert_invoices` reads what the plan needs and runs both.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from portal.db.bulk import insert_many, insert_new_many
from portal.db.customers import customers
from portal.db.invoices import invoices
from portal.db.paging import page_by_id
from portal.domain.conflicts import QUEUED_CODES, queue_conflicts
from portal.domain.timeline import record_timelines, timeline_entry
from portal.errors import Conflict, FieldError, InvalidInput, NotFound, QuittanceError

Status = Literal["draft", "open", "paid", "cancelled"]

# Dates an invoice may carry, given or derived from its terms: wide enough for any real invoice, and far
# enough from the calendar's ends (year 9999) that counting payment terms can never overflow.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2999, 12, 31)


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

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of every field but `version`: equal content, equal hash. Stored with
        each revision, so its value for a given content must never change."""
        content = self.values()
        del content["version"]
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def storage_values(self) -> dict[str, Any]:
        """The invoices columns this input sets (the customer is stored by id: the caller adds it)."""
        values = self.values()
        del values["customer"]
        return values

    def values(self) -> dict[str, Any]:
        """The fields by name, as they are: dataclasses.asdict would also deep-copy every line, only for it
        to be serialized (that copy was most of the CPU of a batch push)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class WriteOutcome:
    external_id: str
    result: Literal["created", "updated", "unchanged", "error"]
    invoice_id: int | None = None
    revision: int | None = None
    error: QuittanceError | None = None


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


def due_date_from_terms(terms: str | None, days: int | None, start: dt.date) -> dt.date | None:
    """The due date that payment terms give when counting starts on `start`; None for custom terms.
    Raises OverflowError past the calendar's end (see `derived_due_date`)."""
    if terms == "at_reception":
        return start
    if terms == "net_days":
        return start + dt.timedelta(days=days or 0)
    if terms == "end_of_month":
        shifted = start + dt.timedelta(days=days or 0)
        return shifted.replace(day=calendar.monthrange(shifted.year, shifted.month)[1])
    return None


def derived_due_date(terms: str | None, days: int | None, start: dt.date) -> dt.date | None:
    """`due_date_from_terms`, refused (InvalidInput at the field that pushed it out) when it falls after
    LATEST_DATE."""
    try:
        due = due_date_from_terms(terms, days, start)
    except OverflowError:
        due = dt.date.max
    if due is not None and due > LATEST_DATE:
        path = "/payment_terms/days" if days else "/issue_date"
        raise InvalidInput("The payment terms give a due date out of range.",
                           [FieldError(path, f"the payment terms give a due date after {LATEST_DATE}")])
    return due


def with_derived_due_date(item: InvoiceInput, today: dt.date) -> InvoiceInput:
    """A non-draft invoice without a due date gets one from its terms, counted from its issue date (or from
    today). Raises InvalidInput if that date is out of range."""
    if item.due_date is not None or item.status == "draft" or item.payment_terms is None:
        return item
    return replace(item, due_date=derived_due_date(item.payment_terms, item.payment_terms_days,
                                                   item.issue_date or today))


def _depends_on_today(item: InvoiceInput) -> bool:
    """The due date is derived from the terms counted from today (no issue or due date): the same body
    converts differently another day, so it gets no fingerprint."""
    return (item.due_date is None and item.issue_date is None and item.status != "draft"
            and item.payment_terms is not None)


# --- The plan: what to do with each item, decided from data alone -------------------------------------------

@dataclass(frozen=True)
class StoredInvoice:
    """What a push needs to know of an invoice already stored."""

    id: int
    external_id: str
    status: str
    total_minor: int
    paid_minor: int
    version: int | None
    revision: int
    content_hash: str
    activated_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    body_fingerprint: str | None


@dataclass(frozen=True)
class Create:
    """A new invoice: `item` (its due date derived), stored with `body_digest` bound to revision 1."""

    item: InvoiceInput
    customer_id: int
    content_hash: str
    body_digest: str | None


@dataclass(frozen=True)
class Update:
    """A new revision of `stored`, with the content of `item`."""

    item: InvoiceInput
    customer_id: int
    content_hash: str
    stored: StoredInvoice
    body_digest: str | None

    @property
    def revision(self) -> int:
        return self.stored.revision + 1


@dataclass(frozen=True)
class Leave:
    """Nothing to write to the invoice. `bind_digest`: a body of the same content, to bind to the current
    revision, so that its next resend is recognised before validation (content and revision stay)."""

    stored: StoredInvoice
    bind_digest: str | None = None


@dataclass(frozen=True)
class Refuse:
    """Not written, for `error`. `stored` is the invoice it would have changed, if any; a refusal that
    protects recorded money (its code in QUEUED_CODES) is kept in the conflict queue with the item."""

    external_id: str
    error: QuittanceError
    stored: StoredInvoice | None = None

    @property
    def queued(self) -> bool:
        return self.stored is not None and isinstance(self.error, Conflict) and self.error.code in QUEUED_CODES


@dataclass(frozen=True)
class Recheck:
    """A `Resent` item whose invoice changed since it was recognised: it must be converted and planned as
    any other item. `apply_plan` writes nothing while a plan has one (ResentChanged)."""

    external_id: str


Decision = Create | Update | Leave | Refuse | Recheck


def plan_upsert(items: Sequence[InvoiceInput | Resent], stored: Mapping[str, StoredInvoice],
                customer_ids: Mapping[str, int], today: dt.date,
                body_digests: Sequence[str | None] | None = None) -> list[Decision]:
    """One decision per item, in order: what pushing `items` does, given the invoices `stored` (by external
    id) and the organization's `customer_ids` (by external id). `today` counts payment terms for invoices
    without a date. `body_digests` (same order, batch API only): see `upsert_invoices`.

    The rules, in the order they apply to an item:
    - an external id seen earlier in the batch is refused (only its first item counts);
    - a `Resent` item is left unchanged if its invoice is still as recognised, else rechecked;
    - an unknown customer, or a due date the terms push out of range, is refused;
    - a new external id is created;
    - paid protection comes first: even a resend identical to an earlier body must not reopen, cancel or
      lower below its payments an invoice paid online since (refused, and queued);
    - the same content is left unchanged;
    - a version not newer than the stored one, or a draft of an activated invoice, is refused;
    - anything else updates the invoice."""
    decisions: list[Decision] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        digest = body_digests[index] if body_digests is not None else None
        decisions.append(_decide(item, digest, stored.get(item.external_id), customer_ids, today, seen))
        seen.add(item.external_id)
    return decisions


def _decide(item: InvoiceInput | Resent, digest: str | None, existing: StoredInvoice | None,
            customer_ids: Mapping[str, int], today: dt.date, seen: set[str]) -> Decision:
    if item.external_id in seen:
        return Refuse(item.external_id, InvalidInput(
            "the same external_id appears twice in this batch",
            [FieldError("/external_id", "duplicate in this batch")]))
    if isinstance(item, Resent):
        if existing is not None and _is_resend(existing, item.body_digest):
            return Leave(existing)
        return Recheck(item.external_id)
    if digest is not None and _depends_on_today(item):
        digest = None
    customer_id = customer_ids.get(item.customer)
    if customer_id is None:
        return Refuse(item.external_id, InvalidInput(
            f"no customer {item.customer!r}; push it first with PUT /api/v1/customers/{{external_id}}",
            [FieldError("/customer", "unknown customer")]))
    try:
        item = with_derived_due_date(item, today)
    except InvalidInput as exc:
        return Refuse(item.external_id, exc)
    content_hash = item.content_hash()
    if existing is None:
        return Create(item, customer_id, content_hash, digest)
    error = _paid_conflict(existing, item)
    if error is None and existing.content_hash == content_hash:
        bind = None
        if digest is not None and existing.paid_minor == 0 and \
                existing.body_fingerprint != _fingerprint(existing.revision, digest):
            # The same content sent as another body (or first sent before fingerprints, or since a document
            # changed the revision).
            bind = digest
        return Leave(existing, bind)
    error = error or _version_conflict(existing, item)
    if error is None and existing.activated_at is not None and item.status == "draft":
        error = Conflict("the invoice was activated; it cannot go back to draft", code="already_activated")
    if error is not None:
        return Refuse(item.external_id, error, existing)
    return Update(item, customer_id, content_hash, existing, digest)


def _is_resend(existing: StoredInvoice | sa.Row, digest: str) -> bool:
    """The item is the body that made the invoice's current revision, and nothing was paid online: then the
    full path would find no paid conflict and an equal content hash, so the answer is "unchanged"."""
    return existing.paid_minor == 0 and existing.body_fingerprint == _fingerprint(existing.revision, digest)


def _paid_conflict(existing: StoredInvoice, item: InvoiceInput) -> Conflict | None:
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


def _version_conflict(existing: StoredInvoice, item: InvoiceInput) -> Conflict | None:
    if item.version is None or existing.version is None or item.version > existing.version:
        return None
    return Conflict(
        f"version {item.version} is not newer than the stored version {existing.version}", code="stale_version")


# --- Reading what the plan needs, and applying it ------------------------------------------------------------

_STORED_COLUMNS = (
    invoices.c.id, invoices.c.external_id, invoices.c.status, invoices.c.total_minor, invoices.c.paid_minor,
    invoices.c.version, invoices.c.revision, invoices.c.content_hash, invoices.c.activated_at,
    invoices.c.cancelled_at, invoices.c.body_fingerprint,
)


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
    rows = {row.external_id: row for row in conn.execute(
        sa.select(invoices.c.external_id, invoices.c.id, invoices.c.revision, invoices.c.paid_minor,
                  invoices.c.body_fingerprint).where(
            invoices.c.organization_id == organization_id, invoices.c.external_id.in_(wanted)))}
    outcomes: list[WriteOutcome | None] = []
    for pair in bodies:
        row = rows.get(pair[0]) if pair is not None else None
        if row is not None and pair is not None and _is_resend(row, pair[1]):
            outcomes.append(WriteOutcome(row.external_id, "unchanged", row.id, row.revision))
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
    stored, customer_ids = read_for_plan(conn, organization_id, items)
    decisions = plan_upsert(items, stored, customer_ids, now.date(), body_digests)
    return apply_plan(conn, organization_id, items, decisions, now, raw_payloads)


def read_for_plan(conn: sa.Connection, organization_id: int, items: Sequence[InvoiceInput | Resent],
                  ) -> tuple[dict[str, StoredInvoice], dict[str, int]]:
    """The stored invoices the items name (locked on PostgreSQL, so two concurrent resends cannot both pass
    the checks), and the ids of the customers they name."""
    if conn.dialect.name == "postgresql":
        _plan_for_these_ids(conn)
    external_ids = list({item.external_id for item in items})
    customer_refs = list({item.customer for item in items if isinstance(item, InvoiceInput)})
    customer_ids: dict[str, int] = {}
    if customer_refs:
        customer_ids = dict(conn.execute(sa.select(customers.c.external_id, customers.c.id).where(
            customers.c.organization_id == organization_id, customers.c.external_id.in_(customer_refs))).all())
    query = sa.select(*_STORED_COLUMNS).where(
        invoices.c.organization_id == organization_id, invoices.c.external_id.in_(external_ids)).order_by(invoices.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    stored = {row.external_id: StoredInvoice(**row._mapping) for row in conn.execute(query)}
    return stored, customer_ids


def apply_plan(conn: sa.Connection, organization_id: int, items: Sequence[InvoiceInput | Resent],
               decisions: Sequence[Decision], now: dt.datetime,
               raw_payloads: Sequence[dict[str, Any]] | None = None) -> list[WriteOutcome]:
    """Write `decisions` (from `plan_upsert` over `items`) in the caller's transaction: new invoices, new
    revisions, their timeline entries, refused resends kept in the conflict queue, and body fingerprints.
    Raises ResentChanged, having written nothing, if any decision is a Recheck."""
    rechecks = [decision.external_id for decision in decisions if isinstance(decision, Recheck)]
    if rechecks:
        raise ResentChanged(rechecks)
    creates = [decision for decision in decisions if isinstance(decision, Create)]
    created_ids = _insert_invoices(conn, organization_id, creates, now)
    # PostgreSQL: a push running at the same time may have created some of these invoices after they were read.
    # Its insert won the unique index and ours left them out (ON CONFLICT DO NOTHING); they exist now, so they
    # are planned again below, against the stored rows, as a resend of them would be.
    lost = [index for index, decision in enumerate(decisions)
            if isinstance(decision, Create) and decision.item.external_id not in created_ids]
    lost_set = set(lost)
    creates = [decision for decision in creates if decision.item.external_id in created_ids]
    updates = [decision for decision in decisions if isinstance(decision, Update)]
    if updates:
        _update_invoices(conn, updates, now)
    timeline = [timeline_entry(organization_id, created_ids[decision.item.external_id], now, "created",
                               {"revision": 1, "status": decision.item.status, "version": decision.item.version})
                for decision in creates]
    timeline += [timeline_entry(organization_id, decision.stored.id, now, "updated",
                                {"revision": decision.revision, "status": decision.item.status,
                                 "version": decision.item.version}) for decision in updates]
    record_timelines(conn, timeline)
    queue_conflicts(conn, organization_id, [
        {"organization_id": organization_id, "invoice_id": decision.stored.id, "created_at": now,
         "code": decision.error.code, "detail": decision.error.detail,
         "payload": raw_payloads[index] if raw_payloads else _jsonable(items[index])}
        for index, decision in enumerate(decisions)
        if isinstance(decision, Refuse) and isinstance(decision.error, Conflict) and decision.queued
        and decision.stored is not None])
    bindings = [{"_id": decision.stored.id,
                 "body_fingerprint": _fingerprint(decision.stored.revision, decision.bind_digest)}
                for decision in decisions if isinstance(decision, Leave) and decision.bind_digest is not None]
    if bindings:
        conn.execute(invoices.update().where(invoices.c.id == sa.bindparam("_id")).values(
            body_fingerprint=sa.bindparam("body_fingerprint")), bindings)
    outcomes = [_outcome(decision, created_ids) if index not in lost_set else None
                for index, decision in enumerate(decisions)]
    if lost:
        again = upsert_invoices(conn, organization_id, [items[index] for index in lost], now,
                                raw_payloads=[raw_payloads[index] for index in lost] if raw_payloads else None,
                                body_digests=[_create(decisions[index]).body_digest for index in lost])
        for index, outcome in zip(lost, again, strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _create(decision: Decision) -> Create:
    assert isinstance(decision, Create)
    return decision


def _outcome(decision: Decision, created_ids: Mapping[str, int]) -> WriteOutcome:
    if isinstance(decision, Create):
        external_id = decision.item.external_id
        return WriteOutcome(external_id, "created", created_ids[external_id], 1)
    if isinstance(decision, Update):
        return WriteOutcome(decision.item.external_id, "updated", decision.stored.id, decision.revision)
    if isinstance(decision, Leave):
        return WriteOutcome(decision.stored.external_id, "unchanged", decision.stored.id, decision.stored.revision)
    if isinstance(decision, Refuse):
        stored = decision.stored
        return WriteOutcome(decision.external_id, "error", stored.id if stored else None,
                            stored.revision if stored else None, decision.error)
    raise AssertionError(f"no outcome for {decision!r}")  # a Recheck never gets this far


def _plan_for_these_ids(conn: sa.Connection) -> None:
    """The lookups of a batch test up to 1,000 external ids. From its fifth run on a connection psycopg
    prepares a statement, and PostgreSQL may then reuse a generic plan that compares every stored row with
    the ids one by one: with 30,000 invoices stored, a batch spent a second in two lookups. A plan made for
    the values at hand hashes the list (or probes the index). For this transaction only."""
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


def _row_values(item: InvoiceInput, customer_id: int, content_hash: str, now: dt.datetime) -> dict[str, Any]:
    return {**item.storage_values(), "customer_id": customer_id, "content_hash": content_hash, "updated_at": now}


def _insert_invoices(conn: sa.Connection, organization_id: int, creates: Sequence[Create],
                     now: dt.datetime) -> dict[str, int]:
    """Insert the new invoices (one executemany); their ids by external id: returned on PostgreSQL, read back by
    the unique (organization, external id) index on SQLite."""
    if not creates:
        return {}
    rows = [{**_row_values(create.item, create.customer_id, create.content_hash, now),
             "organization_id": organization_id, "revision": 1, "created_at": now, "paid_minor": 0,
             "body_fingerprint": _fingerprint(1, create.body_digest) if create.body_digest is not None else None,
             "activated_at": now if create.item.status != "draft" else None,
             "cancelled_at": now if create.item.status == "cancelled" else None}
            for create in creates]
    if conn.dialect.name == "postgresql":
        # Left out if a concurrent push inserted the same invoice first (see apply_plan).
        return dict(insert_new_many(conn, invoices, rows, unique=("organization_id", "external_id"),
                                    returning=("external_id", "id")))
    # SQLite has no such race: its write transactions take turns from their first statement (BEGIN IMMEDIATE).
    insert_many(conn, invoices, rows)
    external_ids = [row["external_id"] for row in rows]
    return dict(conn.execute(sa.select(invoices.c.external_id, invoices.c.id).where(
        invoices.c.organization_id == organization_id, invoices.c.external_id.in_(external_ids))).all())


def _update_invoices(conn: sa.Connection, updates: Sequence[Update], now: dt.datetime) -> None:
    """One executemany UPDATE ... WHERE id = :_id: every row carries the same keys."""
    rows = []
    for update in updates:
        stored, status = update.stored, update.item.status
        rows.append({
            **_row_values(update.item, update.customer_id, update.content_hash, now),
            "_id": stored.id, "revision": update.revision,
            "activated_at": stored.activated_at or (now if status != "draft" else None),
            "cancelled_at": (stored.cancelled_at or now) if status == "cancelled" else None,
            "body_fingerprint": _fingerprint(update.revision, update.body_digest)
            if update.body_digest is not None else None,
        })
    columns = [key for key in rows[0] if key != "_id"]
    conn.execute(invoices.update().where(invoices.c.id == sa.bindparam("_id")).values(
        {column: sa.bindparam(column) for column in columns}), rows)


def _jsonable(item: InvoiceInput | Resent) -> dict[str, Any]:
    values = item.values() if isinstance(item, InvoiceInput) else {"external_id": item.external_id}
    return orjson.loads(orjson.dumps(values))


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
