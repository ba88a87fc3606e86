"""The translation catalogs: in step with the sources, complete, safe to format, and shown on the pages.

A new or changed string in a template or in portal/ fails here until `scripts/i18n extract` and
`scripts/i18n update` have run and the new entries are translated (docs/i18n.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import DictLoader, select_autoescape
from starlette.testclient import TestClient

from portal.domain import organizations as orgs
from portal.web.api.links import link_text
from portal.web.portal.i18n import (LANGUAGES, TRANSLATIONS_DIR, PortalEnvironment, catalog_path, environment,
                                   translations)
from tests.conftest import Tenant

ROOT = Path(__file__).resolve().parent.parent
POT = TRANSLATIONS_DIR / "messages.pot"
TRANSLATED = tuple(language for language in LANGUAGES if language != "en")
PLURAL_FORMS = {
    "fr": "nplurals=2; plural=(n > 1);",
    "nl": "nplurals=2; plural=(n != 1);",
    "de": "nplurals=2; plural=(n != 1);",
    "sv": "nplurals=2; plural=(n != 1);",
}
# %(name)s, %(num)d, ... and %%; anything else after a % is an error in a newstyle gettext string.
PLACEHOLDER = re.compile(r"%(?:\((\w+)\)([sdifr])|%)")
# Jinja marks translations safe (autoescape), so they must not bring markup the English does not have.
MARKUP = set('<>&"')


def read_catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def message_keys(catalog: Catalog) -> set[tuple[Any, str | None]]:
    return {(message.id, message.context) for message in catalog if message.id}


def placeholders(text: str) -> list[tuple[str, str]]:
    return sorted((m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text) if m.group(1))


def forms(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, (tuple, list)) else [message.string]


def english(message: Message) -> list[str]:
    return list(message.id) if isinstance(message.id, tuple) else [message.id]


def extracted() -> Catalog:
    """What `scripts/i18n extract` finds: babel.cfg's patterns, relative to the repository root."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, "babel.cfg")
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
            ROOT, method_map, options_map, keywords=DEFAULT_KEYWORDS):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


# -- The catalogs --------------------------------------------------------------------------------------------


def test_the_template_holds_exactly_the_messages_of_the_sources() -> None:
    found, template = message_keys(extracted()), message_keys(read_catalog(POT))
    assert found, "nothing extracted: babel.cfg does not match the sources"
    assert not found - template, f"new strings: run scripts/i18n extract and update: {sorted(found - template)}"
    assert not template - found, f"strings no longer used: run scripts/i18n extract and update: " \
                                 f"{sorted(template - found)}"


def test_the_extraction_sees_templates_and_python() -> None:
    files = {location[0] for message in extracted() for location in message.locations}
    assert "portal/web/api/links.py" in files
    assert {"templates/base.html", "templates/portal/history.html", "templates/portal/invoice.html"} <= files


def test_there_is_no_compiled_catalog() -> None:
    assert not list(TRANSLATIONS_DIR.rglob("*.mo"))


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_catalog_has_every_message_of_the_template(language: str) -> None:
    catalog = read_catalog(catalog_path(language), language)
    assert message_keys(catalog) == message_keys(read_catalog(POT)), "run scripts/i18n update"
    assert not catalog.obsolete


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_catalog_has_the_plural_rule_of_its_language(language: str) -> None:
    catalog = read_catalog(catalog_path(language), language)
    assert catalog.locale_identifier == language
    assert catalog.plural_forms == PLURAL_FORMS[language]


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_and_checked(language: str) -> None:
    catalog = read_catalog(catalog_path(language), language)
    problems = []
    for message in catalog:
        if not message.id:
            continue
        translations = forms(message)
        if message.fuzzy:
            problems.append(f"fuzzy: {message.id!r}")
        if message.pluralizable and len(translations) != catalog.num_plurals:
            problems.append(f"{len(translations)} forms instead of {catalog.num_plurals}: {message.id!r}")
        if not all(text and text.strip() for text in translations):
            problems.append(f"untranslated: {message.id!r}")
    problems += [f"{message.id!r}: {error}" for message, errors in catalog.check() for error in errors]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_the_placeholders_and_format_like_jinja_does(language: str) -> None:
    catalog = read_catalog(catalog_path(language), language)
    samples = {"s": "x", "d": 3, "i": 3, "f": 1.5, "r": "x"}
    problems = []
    for message in catalog:
        if not message.id:
            continue
        wanted = placeholders(english(message)[0])
        for source in english(message):
            if source.count("%") != 2 * source.count("%%") + len(placeholders(source)):
                problems.append(f"a lone % in the English (write %%): {source!r}")
        for text in forms(message):
            if placeholders(text) != wanted:
                problems.append(f"placeholders {placeholders(text)} instead of {wanted}: {text!r}")
            # Newstyle gettext always applies %, even without variables: a lone % would break the page.
            try:
                formatted = text % {name: samples[kind] for name, kind in wanted}
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"does not format ({exc}): {text!r}")
            else:
                if "%(" in formatted:
                    problems.append(f"placeholder left after formatting: {text!r}")
            extra = {char for char in text if char in MARKUP} - set("".join(english(message)))
            if extra:
                problems.append(f"markup characters {sorted(extra)} the English does not have: {text!r}")
            if text != text.strip() or "  " in text:
                problems.append(f"stray spaces: {text!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_link_text_for_emails_is_translated(language: str) -> None:
    text = link_text(language)
    assert text and text != "Pay your invoice online"
    assert link_text("en") == "Pay your invoice online"


# -- The pages -----------------------------------------------------------------------------------------------

# A few strings of the invoice list and of the invoice page, per language.
SAMPLES = {
    "en": ("Your invoices", "Still to pay", "Sign out", "Invoice 2026-0001", "Questions and remarks"),
    "fr": ("Vos factures", "Reste à payer", "Se déconnecter", "Facture 2026-0001", "Questions et remarques"),
    "nl": ("Uw facturen", "Nog te betalen", "Afmelden", "Factuur 2026-0001", "Vragen en opmerkingen"),
    "de": ("Ihre Rechnungen", "Noch zu zahlen", "Abmelden", "Rechnung 2026-0001", "Fragen und Anmerkungen"),
    "sv": ("Dina fakturor", "Kvar att betala", "Logga ut", "Faktura 2026-0001", "Frågor och synpunkter"),
}
CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def open_portal(app: Any, tenant: Tenant) -> tuple[TestClient, Any]:
    """A debtor's browser, after following the link of a reminder email to /portal."""
    assert tenant.put_invoice().status_code in (200, 201)
    link = tenant.client.post("/api/v1/customers/C1/portal-links", json={})
    assert link.status_code == 201, link.text
    browser = TestClient(app, raise_server_exceptions=True)
    page = browser.get(link.json()["url"])
    assert page.status_code == 200 and page.url.path == "/portal"
    assert [r.status_code for r in page.history] == [303]
    return browser, page


def choose_language(browser: TestClient, page: Any, language: str, next_path: str) -> Any:
    match = CSRF.search(page.text)
    assert match, "no CSRF token on the page"
    response = browser.post("/portal/language", data={"csrf": match.group(1), "language": language,
                                                      "next": next_path})
    assert response.status_code == 200 and [r.status_code for r in response.history] == [303]
    return response


def test_the_pages_speak_each_language(app: Any, tenant: Tenant) -> None:
    browser, page = open_portal(app, tenant)
    # The customer's locale is fr-BE: French until the debtor picks another language.
    assert '<html lang="fr">' in page.text and "Vos factures" in page.text
    invoice_path = re.search(r'href="(/portal/invoices/\d+)"', page.text)
    assert invoice_path
    for language in (*TRANSLATED, "en"):
        history = choose_language(browser, page, language, "/portal")
        invoice = browser.get(invoice_path.group(1))
        assert invoice.status_code == 200
        for text in (history.text, invoice.text):
            assert f'<html lang="{language}">' in text
        title, still_to_pay, sign_out, invoice_title, remarks = SAMPLES[language]
        assert title in history.text and still_to_pay in history.text and sign_out in history.text
        assert invoice_title in invoice.text and remarks in invoice.text
        if language != "en":
            assert "Your invoices" not in history.text and "Still to pay" not in invoice.text
        page = invoice


def test_the_contact_sentence_keeps_its_links_and_escapes_the_values(app: Any, tenant: Tenant,
                                                                    database: Any) -> None:
    database.run(lambda conn: orgs.set_branding(conn, tenant.org, contact_email="a&b@acme.example",
                                                contact_phone="+32 2 555 01 02"))
    browser, page = open_portal(app, tenant)
    page = choose_language(browser, page, "de", "/portal")
    assert ('Sie erreichen uns auch per E-Mail an <a href="mailto:a&amp;b@acme.example">a&amp;b@acme.example</a>'
            ' oder telefonisch unter <a href="tel:+3225550102">+32 2 555 01 02</a>.') in page.text

    database.run(lambda conn: orgs.set_branding(conn, tenant.org, contact_phone=""))
    page = browser.get("/portal")
    assert 'Sie erreichen uns auch per E-Mail an <a href="mailto:a&amp;b@acme.example">' in page.text
    assert "telefonisch" not in page.text


def test_the_link_tag_is_rendered_in_the_requested_language(tenant: Tenant) -> None:
    response = tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "C1", "template": "Hello #LINK", "format": "text", "locale": "nl"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rendered"] == f"Hello Betaal uw factuur online: {body['url']}"



@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", ["page.html", "mail.txt"])
def test_texts_translated_when_compiled_read_as_when_translated_at_render_time(language: str, name: str) -> None:
    """`_FixedTexts` moves `_()` from render time to compile time; nothing a reader sees may change: the same
    words, variables escaped in HTML (not in text), a "%" without variables left to gettext."""
    source = ('{{ _("Due date") }}|{{ _("Select invoice %(number)s", number=number) }}|'
              '{% set label = _("Paid") %}{{ label ~ number }}|{{ _("Pages") | upper }}|{{ _("100%% sure") }}|'
              '{% autoescape false %}{{ _("Select invoice %(number)s", number=number) }}{% endautoescape %}')

    def portal_environment(translate: Any) -> PortalEnvironment:
        env = PortalEnvironment(loader=DictLoader({name: source}), autoescape=select_autoescape(["html"]),
                                extensions=["jinja2.ext.i18n"])
        env.globals.update(_=environment(language).globals["_"], gettext=environment(language).globals["gettext"])
        env.translate = translate
        return env

    at_compile_time = portal_environment(translations(language).gettext)
    at_render_time = portal_environment(None)
    values = {"number": "<F&1>"}
    page = at_compile_time.get_template(name).render(values)
    assert page == at_render_time.get_template(name).render(values)
    assert translations(language).gettext("Due date") in page
    assert ("&lt;F&amp;1&gt;" in page) == name.endswith(".html")
    assert "<F&1>" in page.rsplit("|", 1)[1]  # not escaped where autoescaping is turned off
    code = at_compile_time.compile(source, name, name, raw=True)
    assert "'Due date'" not in code and "'Select invoice %(number)s'" not in code  # no gettext call left
    shadowed = '{% from "other.html" import label as _ %}' + source
    assert "'Due date'" in at_compile_time.compile(shadowed, name, name, raw=True)  # left to render time
