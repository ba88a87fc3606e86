"""Languages of the debtor pages and emails: gettext catalogs (managed with Babel under portal/translations),
the Jinja environment that renders templates/ in each language, and locale-aware amounts and dates.

Catalogs are read from the .po files and compiled in memory on first use, so there is no build step and no
compiled file to forget. Each language has one Jinja environment, cached for the life of the process, with
Jinja's own i18n extension and that language's catalog installed (newstyle gettext). The pages and the emails
share these environments.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from portal.money import to_decimal

LANGUAGES = ("en", "fr", "nl", "de", "sv")
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "nl": "Nederlands", "de": "Deutsch", "sv": "Svenska"}
DEFAULT_LANGUAGE = "en"
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def language_of(locale: str | None) -> str:
    """ "nl-BE" -> "nl"; anything unsupported -> English."""
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def catalog_path(language: str) -> Path:
    return TRANSLATIONS_DIR / language / "LC_MESSAGES" / "messages.po"


@cache
def translations(language: str) -> NullTranslations:
    """The language's catalog; English, the language of the sources, has none. Fuzzy entries are not used."""
    path = catalog_path(language)
    if language == DEFAULT_LANGUAGE or not path.exists():
        return NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled)


@cache
def environment(language: str) -> Environment:
    """The Jinja environment of `language`: .html templates autoescaped, .txt ones (email text) not.

    `_()`, `gettext` and `ngettext` in templates are the catalog's, newstyle: `_("Invoice %(number)s",
    number=n)` formats the translation with the (escaped) value, and marks the translation safe where
    autoescaping is on. Templates are read once (auto_reload off): a changed template or catalog takes effect on
    the next start."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]  # added by the i18n extension
    return env


@dataclass(frozen=True)
class Formatter:
    """Amounts and dates as a reader of `locale` writes them: "1.234,50 €" in Belgium, "€1,234.50" in Ireland."""

    locale: str

    @cached_property
    def parsed(self) -> Locale:
        """Parsed once: Babel parses a locale given as a string again on every call."""
        return Locale.parse(self.locale)

    @classmethod
    def for_language(cls, language: str, customer_locale: str | None) -> Formatter:
        # Keep the customer's region when it fits the language shown: fr + "nl-BE" -> fr_BE.
        region = (customer_locale or "").replace("_", "-").partition("-")[2].upper()
        return _formatter(language, region)

    def money(self, minor: int, currency: str) -> str:
        return str(format_currency(to_decimal(minor, currency), currency, locale=self.parsed))

    def date(self, value: dt.date | None, style: str = "medium") -> str:
        if not value:
            return ""
        return str(format_date(value.date() if isinstance(value, dt.datetime) else value, style, locale=self.parsed))

    def datetime(self, value: dt.datetime | None) -> str:
        return str(format_datetime(value, "medium", locale=self.parsed, tzinfo=dt.UTC)) if value else ""


@lru_cache(maxsize=256)
def _formatter(language: str, region: str) -> Formatter:
    if region:
        try:
            return Formatter(str(Locale.parse(f"{language}_{region}")))
        except (UnknownLocaleError, ValueError):
            pass
    return Formatter(language)
