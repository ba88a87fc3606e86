"""The debtor's pages. Every GET only reads (mail scanners open links before people do; the one write is the
visit log of a landing); every change is a POST with a CSRF token. Each page's data is read in one
transaction that also re-checks the link, through the domain's functions, which all apply the link's scope
(links.visible_invoices)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import sqlalchemy as sa
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.domain import debtor, links, rate_limits, remarks
from portal.domain.timeline import timeline_of
from portal.domain.links import DebtorScope
from portal.errors import FieldError, InvalidInput, NotFound, QuittanceError
from portal.i18n import LANGUAGE_NAMES, LANGUAGES, Formatter, environment, language_of
from portal.services import Services
from portal.tokens import PORTAL_LINK, InvalidToken
from portal.web.api.bodies import read_bounded
from portal.web.api.problems import HttpProblem
from portal.web.clients import client_address, refusal_headers
from portal.web.downloads import attachment, safe_filename
from portal.web.portal import session as sessions
from portal.web.portal import zip_download
from portal.web.portal.view import history_row_view, invoice_view, summary_view, timeline_view

T = TypeVar("T")
FORM_LIMIT = 16 * 1024
# Enough for a checkout of 100 invoices plus the other fields.
FORM_FIELDS = 120
# A urlencoded form: text values only (multipart, with uploads, is refused by read_form).
Form = ImmutableMultiDict[str, str]
# Debtor-visible timeline entries; the rest (pushes, revisions) is bookkeeping for staff.
DEBTOR_TIMELINE = {"activated", "created", "due_date_extended", "cancelled", "document_attached", "remark", "payment",
                   "refund", "refund_reversed", "chargeback", "chargeback_reversed", "credit_note_applied",
                   "credit_note_used"}


def services_of(request: Request) -> Services:
    return request.app.state.services


def chosen_language(request: Request, scope: DebtorScope | None, fallback: str | None = None) -> str:
    cookie = request.cookies.get(sessions.LANGUAGE_COOKIE)
    if cookie in LANGUAGES:
        return str(cookie)
    if scope is not None:
        return language_of(scope.customer_locale)
    if fallback:
        return language_of(fallback)
    accepted = request.headers.get("accept-language", "")
    for part in accepted.split(","):
        language = language_of(part.split(";")[0].strip())
        if language != "en" or part.strip().lower().startswith("en"):
            return language
    return "en"


def render(request: Request, template: str, language: str, context: dict[str, Any], *, status: int = 200,
           scope: DebtorScope | None = None) -> HTMLResponse:
    env = environment(language)
    fmt = Formatter.for_language(language, scope.customer_locale if scope else None)
    html = env.get_template(template).render(
        request_path=request.url.path, query=request.url.query, language=language, languages=LANGUAGE_NAMES,
        fmt=fmt, scope=scope, **context)
    return HTMLResponse(html, status_code=status)


class DebtorRequest:
    """A request from a debtor with a live session: its scope, language and CSRF token."""

    def __init__(self, request: Request, session: sessions.DebtorSession, scope: DebtorScope,
                 now: dt.datetime) -> None:
        self.request, self.session, self.scope, self.now = request, session, scope, now
        self.services = services_of(request)
        self.language = chosen_language(request, scope)

    @property
    def formatter(self) -> Formatter:
        return Formatter.for_language(self.language, self.scope.customer_locale)

    def render(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        csrf = sessions.csrf_token(self.session.secret)
        return render(self.request, template, self.language, {"csrf": csrf, **context}, status=status,
                      scope=self.scope)

    @property
    def today(self) -> dt.date:
        """The day the link was checked on: the page's "overdue" and the query's agree even at midnight."""
        return self.now.date()


async def debtor_request(request: Request, work: Callable[[sa.Connection, DebtorScope], T], *,
                         write: bool = False, durable: bool = False,
                         now: dt.datetime | None = None) -> tuple[DebtorRequest, T]:
    """Check the session and the link behind it (links.resolve, at `now` or the clock's time), and run `work`
    with the link's scope in the same transaction (`durable`: see Database.write)."""
    services = services_of(request)
    secret = sessions.cookie_secret(request)
    now = now or services.now()

    def checked(conn: sa.Connection) -> tuple[sessions.DebtorSession, tuple[DebtorScope, T]]:
        session = sessions.read_session(conn, secret, now)
        try:
            scope = links.resolve(conn, session.link_id, now)
        except links.LinkNotUsable as exc:
            raise sessions.NoSession(session.link_id) from exc
        if write:
            sessions.touch(conn, session, now)
        return session, (scope, work(conn, scope))

    session, (scope, result) = await (services.db.write(checked, durable=durable) if write
                                      else services.db.read(checked))
    return DebtorRequest(request, session, scope, now), result


def posted_secret(request: Request, form: Form) -> str:
    """The session secret of a form post whose CSRF token is that session's (the session itself is read
    in the handler's transaction)."""
    secret = sessions.cookie_secret(request)
    sessions.check_csrf(request, form.get("csrf"), secret, services_of(request).settings)
    return secret


async def landing(request: Request) -> Response:
    """GET /l/{token}: check the link, open a session bound to it, and leave the token out of the address
    bar, the history and any Referer by redirecting to /portal.

    A client address whose tokens failed too often lately is refused (429) whatever it presents, a good token
    included, until its window has moved on: tokens cannot be guessed, and this keeps anyone from trying."""
    services = services_of(request)
    client = client_address(request)
    now = services.now()
    throttle = await services.db.read(rate_limits.check, rate_limits.LINK_TOKEN_FAILURES, client, now)
    if not throttle.allowed:
        return too_many_attempts(request, throttle)
    token = request.path_params["token"]
    max_age = services.settings.link_days_max * 86400
    try:
        payload = services.tokens.verify(PORTAL_LINK, token, max_age)
        link_id = payload["l"] if isinstance(payload, dict) and isinstance(payload.get("l"), int) else None
        if link_id is None:
            raise InvalidToken("no link id")
    except InvalidToken:
        return await _failed_link(request, None, client, now)
    user_agent = request.headers.get("user-agent", "")[:500]

    # Link checkers probe with HEAD (browsers navigate with GET): answer alike, but log nothing and open
    # no session.
    probe = request.method == "HEAD"

    def land(conn: sa.Connection) -> str | None:
        scope = links.resolve(conn, link_id, now)
        if probe:
            return None
        links.record_visit(conn, scope, now, user_agent)
        return sessions.open_session(conn, services.settings, scope.organization_id, link_id, now)

    try:
        secret = await (services.db.read(land) if probe else services.db.write(land))
    except NotFound:
        return await _failed_link(request, link_id, client, now)
    response = RedirectResponse("/portal", status_code=303)
    if secret is not None:
        sessions.set_cookie(response, services.settings, secret)
    return response


async def _failed_link(request: Request, link_id: int | None, client: str, now: dt.datetime) -> Response:
    """A token that opens nothing (forged, expired, revoked) counts against its client address."""
    await services_of(request).db.write(rate_limits.hit, rate_limits.LINK_TOKEN_FAILURES, client, now)
    return await invalid_link(request, link_id)


def too_many_attempts(request: Request, verdict: rate_limits.Verdict) -> Response:
    minutes = max(1, -(-verdict.retry_after // 60))
    response = render(request, "portal/too_many.html", chosen_language(request, None), {"minutes": minutes},
                      status=429)
    response.headers.update(refusal_headers(rate_limits.LINK_TOKEN_FAILURES, verdict))
    return response


async def invalid_link(request: Request, link_id: int | None, status: int = 404) -> Response:
    """One page for every link or session that does not work, saying only whom to ask for a fresh one."""
    contact = None
    if link_id is not None:
        contact = await services_of(request).db.read(links.contact_of_link, link_id)
    language = chosen_language(request, None, contact[3] if contact else None)
    response = render(request, "portal/link_invalid.html", language, {"contact": contact}, status=status)
    sessions.close_session(response, services_of(request).settings)
    return response


def _int_param(request: Request, name: str, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isdigit() and minimum <= int(raw) <= maximum else None


async def history(request: Request) -> Response:
    status = request.query_params.get("status")
    status = status if status in debtor.STATUS_FILTERS else None
    year = _int_param(request, "year", 1900, 2999)
    page = _int_param(request, "page", 1, 100_000) or 1
    now = services_of(request).now()
    debtor_req, result = await debtor_request(request, lambda conn, scope: debtor.history(
        conn, scope, now.date(), status=status, year=year, page=page), now=now)
    today, fmt = debtor_req.today, debtor_req.formatter
    return debtor_req.render("portal/history.html", {
        "summary": summary_view(result.summary),
        "rows": [history_row_view(row, today, fmt) for row in result.items],
        "page": result.page, "pages": result.pages, "total": result.total, "status": status, "year": year,
        "years": result.summary.years,
        "notice": "nodocuments" if request.query_params.get("nodocuments") == "1" else None,
    })


def _invoice_id(request: Request) -> int:
    raw = request.path_params["invoice_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such invoice")
    return int(raw)


async def _invoice_context(request: Request) -> tuple[DebtorRequest, dict[str, Any]]:
    invoice_id = _invoice_id(request)

    def read(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, list[Any], Sequence[Any]]:
        row = debtor.invoice(conn, scope, invoice_id)
        events = [e for e in timeline_of(conn, scope.organization_id, row.id) if e.kind in DEBTOR_TIMELINE]
        return row, events, remarks.thread(conn, scope.organization_id, row.id)

    debtor_req, (row, events, thread) = await debtor_request(request, read)
    return debtor_req, {"invoice": invoice_view(row, debtor_req.today), "timeline": timeline_view(events, row),
                        "remarks": thread, "sent": request.query_params.get("sent") == "1", "errors": {},
                        "form": {}}


async def invoice_page(request: Request, template: str = "portal/invoice.html") -> Response:
    debtor_req, context = await _invoice_context(request)
    return debtor_req.render(template, context)


async def print_view(request: Request) -> Response:
    return await invoice_page(request, "portal/print.html")


async def pdf(request: Request) -> Response:
    invoice_id = _invoice_id(request)
    debtor_req, row = await debtor_request(request, lambda conn, scope: debtor.invoice(conn, scope, invoice_id))
    store = debtor_req.services.documents
    if row.document_sha256 is None or not store.exists(row.document_sha256):
        raise NotFound("no document")
    return attachment(store.iter_bytes(row.document_sha256), name=row.number or row.external_id,
                      extension="pdf", media_type="application/pdf", size=row.document_size)


async def download_zip(request: Request) -> Response:
    """Several selected invoices' PDFs as one zip, each PDF once, within the download limits, streamed as it is
    built off the event loop (zip_download)."""
    ids = zip_download.distinct_ids(request.query_params.getlist("invoice"))
    limits = services_of(request).settings.limits
    too_many = len(ids) > limits.download_files
    debtor_req, rows = await debtor_request(
        request, lambda conn, scope: [] if too_many else debtor.invoices_by_ids(conn, scope, ids))
    store = debtor_req.services.documents
    with_documents = [row for row in rows if row.document_sha256 and store.exists(row.document_sha256)]
    refusal = zip_download.check(len(ids) if too_many else len(with_documents),
                                 sum(row.document_size or 0 for row in with_documents),
                                 max_files=limits.download_files, max_bytes=limits.download_bytes)
    if refusal is not None:
        return debtor_req.render("portal/download_refused.html", {
            "reason": refusal.reason, "limit": refusal.limit, "megabytes": refusal.limit // (1024 * 1024)},
            status=422)
    if not with_documents:
        return RedirectResponse("/portal?nodocuments=1", status_code=303)
    names: set[str] = set()
    files = [(_unique(names, row.number or row.external_id), row.document_sha256) for row in with_documents]
    return attachment(zip_download.in_threads(zip_download.zip_chunks(store, files)),
                      name=f"{debtor_req.scope.organization_name} invoices", extension="zip",
                      media_type="application/zip")


def _unique(names: set[str], wanted: str) -> str:
    candidate, counter = safe_filename(wanted, "pdf"), 1
    while candidate in names:
        counter += 1
        candidate = safe_filename(f"{wanted}-{counter}", "pdf")
    names.add(candidate)
    return candidate


async def read_form(request: Request) -> Form:
    """A small urlencoded form, read with a bound (the body and the number of fields)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HttpProblem(415, "unsupported-media-type", "Unsupported media type", "Send a form.")
    body = await read_bounded(request, FORM_LIMIT)
    try:
        return Form(parse_qsl(body.decode(), max_num_fields=FORM_FIELDS))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpProblem(400, "malformed", "Malformed request", "Bad form.") from exc


async def post_remark(request: Request) -> Response:
    invoice_id = _invoice_id(request)
    form = await read_form(request)
    services = services_of(request)
    secret = posted_secret(request, form)
    body = form.get("body", "").strip()
    reply_to = form.get("reply_to", "").strip() or None
    errors = {}
    if not body:
        errors["body"] = "empty"
    elif len(body) > remarks.MAX_LENGTH:
        errors["body"] = "too_long"
    if reply_to is not None and len(reply_to) > 320:
        errors["reply_to"] = "too_long"
    now = services.now()

    def write(conn: sa.Connection) -> None:
        session = sessions.read_session(conn, secret, now)
        try:
            scope = links.resolve(conn, session.link_id, now)
        except links.LinkNotUsable as exc:
            raise sessions.NoSession(session.link_id) from exc
        sessions.touch(conn, session, now)
        if errors:
            raise InvalidInput("invalid remark", [FieldError(f"/{k}", v) for k, v in errors.items()])
        remarks.add_debtor_remark(conn, scope, invoice_id, body, reply_to, now)

    try:
        await services.db.write(write)
    except (InvalidInput, remarks.TooManyRemarks) as exc:
        return await _remark_form_again(request, form, exc)
    return RedirectResponse(f"/portal/invoices/{invoice_id}?sent=1#remarks", status_code=303)


async def _remark_form_again(request: Request, form: Form, exc: QuittanceError) -> Response:
    """The invoice page again, with the debtor's text kept and the problem said next to the field."""
    debtor_req, context = await _invoice_context(request)
    rate_limited = isinstance(exc, remarks.TooManyRemarks)
    errors = {"body": "rate_limited"} if rate_limited else {
        e.path.strip("/"): e.message for e in getattr(exc, "errors", [])}
    return debtor_req.render("portal/invoice.html", {**context, "errors": errors, "form": form},
                             status=429 if rate_limited else 422)


async def set_language(request: Request) -> Response:
    form = await read_form(request)
    services = services_of(request)
    secret = posted_secret(request, form)
    await services.db.read(sessions.read_session, secret, services.now())
    language = form.get("language", "")
    target = form.get("next", "/portal")
    if not target.startswith("/portal") or "//" in target or "\\" in target:
        target = "/portal"
    response = RedirectResponse(target, status_code=303)
    if language in LANGUAGES:
        response.set_cookie(sessions.LANGUAGE_COOKIE, language, max_age=365 * 86400, httponly=True,
                            samesite="lax", secure=services.settings.is_https, path="/")
    return response


async def sign_out(request: Request) -> Response:
    """End the session on the server (a copy of the cookie opens nothing afterwards) and drop the cookie.
    Signing out of a session that has already ended says the same."""
    form = await read_form(request)
    services = services_of(request)
    secret = posted_secret(request, form)
    await services.db.write(sessions.end_session, secret, services.now())
    response = render(request, "portal/signed_out.html", chosen_language(request, None), {})
    sessions.close_session(response, services.settings)
    return response


routes = [
    Route("/l/{token}", landing, methods=["GET"]),
    Route("/portal", history, methods=["GET"]),
    Route("/portal/download", download_zip, methods=["GET"]),
    Route("/portal/language", set_language, methods=["POST"]),
    Route("/portal/sign-out", sign_out, methods=["POST"]),
    Route("/portal/invoices/{invoice_id}", invoice_page, methods=["GET"]),
    Route("/portal/invoices/{invoice_id}/pdf", pdf, methods=["GET"]),
    Route("/portal/invoices/{invoice_id}/print", print_view, methods=["GET"]),
    Route("/portal/invoices/{invoice_id}/remarks", post_remark, methods=["POST"]),
]
