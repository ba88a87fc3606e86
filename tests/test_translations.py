"""The translation catalogs: in step with the sources, complete, safe to format, and shown on the pages.

A new or changed string in a template or in portal/ fails here until `scripts/i18n extract` and
`scripts/i18n update` have run and the new entries are translated (docs/i18n.md).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import DictLoader
from starlette.testclient import TestClient

from portal.domain import organizations as orgs
from portal.i18n import LANGUAGES, TRANSLATIONS_DIR, catalog_path, environment, translations
from portal.web.api.links import link_text
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



@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", ["page.html", "mail.txt"])
def test_templates_translate_with_newstyle_gettext_and_escape_only_html(language: str, name: str) -> None:
    """Jinja's own i18n extension with the language's catalog: the translated words, variables escaped in
    HTML (not in the text of emails), the translation itself never escaped, `%%` a literal percent sign."""
    catalog = translations(language)
    source = ('{{ _("Due date") }}|{{ _("Select invoice %(number)s", number=number) }}|{{ _("100%% sure") }}|'
              '{{ ngettext("%(num)d invoice", "%(num)d invoices", 2) }}|'
              '{% autoescape false %}{{ _("Select invoice %(number)s", number=number) }}{% endautoescape %}')
    env = environment(language).overlay(loader=DictLoader({name: source}))
    page = env.get_template(name).render(number="<F&1>")
    due, select, percent, count, unescaped = page.split("|")
    assert due == catalog.gettext("Due date") and (language == "en" or due != "Due date")
    number = "&lt;F&amp;1&gt;" if name.endswith(".html") else "<F&1>"
    assert select == catalog.gettext("Select invoice %(number)s") % {"number": number}
    assert percent == "100% sure"
    assert count == catalog.ngettext("%(num)d invoice", "%(num)d invoices", 2) % {"num": 2}
    assert unescaped == catalog.gettext("Select invoice %(number)s") % {"number": "<F&1>"}


def test_html_templates_are_autoescaped_and_text_templates_are_not() -> None:
    env = environment("fr")
    assert env.autoescape("portal/history.html") and env.autoescape("email/receipt.html")  # type: ignore[operator]
    assert not env.autoescape("email/receipt.txt")  # type: ignore[operator]


# -- No private names, one home for translations -------------------------------------------------------------

PORTAL = ROOT / "portal"


def imported_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` and `import module` of a file."""
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [(alias.name, "") for alias in node.names]
    return names


def is_private(name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in name.split(".") if part)


def test_portal_imports_no_private_name_of_a_dependency() -> None:
    """Private names (a leading underscore) change without notice between releases of a dependency."""
    found = [f"{path.relative_to(ROOT)}: {module} {name}".strip()
             for path in sorted(PORTAL.rglob("*.py"))
             for module, name in imported_names(path)
             if module.split(".")[0] not in ("portal", "__future__") and (is_private(module) or is_private(name))]
    assert not found, "\n".join(found)


def test_translations_are_imported_from_portal_i18n_and_not_from_the_web_layer() -> None:
    """Mail and the connectors translate too: the module they share lives beside them, not under web/."""
    assert not (PORTAL / "web" / "portal" / "i18n.py").exists()
    # portal/app.py assembles the web application: it is the one module outside web/ that mounts its pages.
    outside_web = [path for path in PORTAL.rglob("*.py")
                   if PORTAL / "web" not in path.parents and path != PORTAL / "app.py"]
    found = [f"{path.relative_to(ROOT)}: {module}" for path in outside_web for module, _ in imported_names(path)
             if module.startswith("portal.web.portal")]
    assert not found, "\n".join(found)
    users = {path.relative_to(ROOT).as_posix() for path in PORTAL.rglob("*.py")
             if any(module == "portal.i18n" for module, _ in imported_names(path))}
    assert {"portal/mail.py", "portal/connectors/email.py", "portal/web/portal/pages.py"} <= users
