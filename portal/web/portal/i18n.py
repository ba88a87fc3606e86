"""Languages of the debtor pages: gettext catalogs (managed with Babel under portal/translations) and
locale-aware formatting of amounts and dates.

Catalogs are read from the .po files and compiled in memory at start-up, so there is no build step and no
compiled file to forget. Each language gets its own Jinja environment with its translations installed.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from functools import cache
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
TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "translations"
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "templates"


def language_of(locale: str | None) -> str:
    """ "nl-BE" -> "nl"; anything unsupported -> English."""
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def catalog_path(language: str) -> Path:
    return TRANSLATIONS_DIR / language / "LC_MESSAGES" / "messages.po"


@cache
def translations(language: str) -> NullTranslations:
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
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


@dataclass(frozen=True)
class Formatter:
    """Amounts and dates as a reader of `locale` writes them: "1.234,50 €" in Belgium, "€1,234.50" in Ireland."""

    locale: str

    @classmethod
    def for_language(cls, language: str, customer_locale: str | None) -> Formatter:
        # Keep the customer's region when it fits the language shown: fr + "nl-BE" -> fr_BE.
        region = (customer_locale or "").replace("_", "-").partition("-")[2].upper()
        if region:
            try:
                return cls(str(Locale.parse(f"{language}_{region}")))
            except (UnknownLocaleError, ValueError):
                pass
        return cls(language)

    def money(self, minor: int, currency: str) -> str:
        return str(format_currency(to_decimal(minor, currency), currency, locale=self.locale))

    def date(self, value: dt.date | None, style: str = "medium") -> str:
        return format_date(value, format=style, locale=self.locale) if value else ""

    def datetime(self, value: dt.datetime | None) -> str:
        return format_datetime(value, format="medium", locale=self.locale, tzinfo=dt.UTC) if value else ""
