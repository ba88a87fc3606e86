"""Languages of the debtor pages: gettext catalogs (managed with Babel under portal/translations) and
locale-aware formatting of amounts and dates.

Catalogs are read from the .po files and compiled in memory at start-up, so there is no build step and no
compiled file to forget. Each language gets its own Jinja environment with its translations installed.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import DateTimePattern, format_datetime, get_date_format, parse_pattern
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, get_currency_precision, get_decimal_symbol, get_group_symbol
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, Template, nodes, select_autoescape
from jinja2.runtime import Context, Macro
from jinja2.utils import _PassArg, internalcode
from jinja2.visitor import NodeTransformer
from markupsafe import _escape_inner as _escaped_text  # escape() without its Markup wrapper (see _PageTemplate)

from portal.money import exponent, to_decimal

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


class _Context(Context):
    """Jinja's Context with a shorter way through `call` for the callables a page calls hundreds of times
    (translations, fmt.money, fmt.date, macros): for a function, method or macro, what Context.call works out
    with three hasattr probes per call (whether to pass the context) is read in one lookup. Anything else
    goes through Context.call itself; arguments and results are the same either way."""

    @internalcode
    def call(__self, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        if __debug__:
            __traceback_hide__ = True  # noqa: F841
        kind = type(__obj)
        if kind is Macro:
            pass_arg = None  # Macro.__call__ takes no context
        elif kind in _PLAIN_CALLABLES:
            # Their __call__ is a method-wrapper, which never carries jinja_pass_arg; a bound method reads
            # its function's attribute.
            pass_arg = getattr(__obj, "jinja_pass_arg", None)
        else:
            return Context.call(__self, __obj, *args, **kwargs)
        if pass_arg is _PassArg.context:
            if kwargs.get("_loop_vars"):
                __self = __self.derived(kwargs["_loop_vars"])
            if kwargs.get("_block_vars"):
                __self = __self.derived(kwargs["_block_vars"])
            args = (__self, *args)
        elif pass_arg is _PassArg.eval_context:
            args = (__self.eval_ctx, *args)
        elif pass_arg is _PassArg.environment:
            args = (__self.environment, *args)
        kwargs.pop("_block_vars", None)
        kwargs.pop("_loop_vars", None)
        try:
            return __obj(*args, **kwargs)
        except StopIteration:
            return __self.environment.undefined(
                "value was undefined because a callable raised a StopIteration exception")


_PLAIN_CALLABLES = frozenset({FunctionType, MethodType, BuiltinFunctionType})
_DICT_ATTRIBUTES = frozenset(dir(dict))


_GETTEXT_NAMES = frozenset({"_", "gettext"})


class _FixedTexts(NodeTransformer):
    """`_("Some text")` and `_("Invoice %(number)s", number=...)`, translated when a template is compiled: each
    language has its own environment, and so its own compiled templates, and a catalog never changes once
    loaded. A text without variables joins the literal HTML around it, and the page makes no call for it at all
    (a history page made about ninety); one with variables becomes `translation % {variables}`. Either way the
    value is what newstyle gettext returns at run time: where autoescaping is on (by the template's name, or an
    `{% autoescape %}` block), Markup of the translation, into which `%` escapes the variables; a plain string
    otherwise. A text without variables but with a "%" is left to run time, and so is every call in a template
    that binds the name `_` or `gettext` itself (set, for, macro arguments, import)."""

    def __init__(self, translate: Callable[[str], str]) -> None:
        self.translate = translate

    def visit_Template(self, node: nodes.Template) -> nodes.Node:
        bound = {name.name for name in node.find_all(nodes.Name) if name.ctx != "load"}
        bound.update(imported.target for imported in node.find_all(nodes.Import))
        for imported in node.find_all(nodes.FromImport):
            bound.update(name if isinstance(name, str) else name[1] for name in imported.names)
        if bound & _GETTEXT_NAMES:
            return node
        return self.generic_visit(node)  # type: ignore[no-any-return]

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        node = self.generic_visit(node)
        fixed = (isinstance(node.node, nodes.Name) and node.node.name in _GETTEXT_NAMES and len(node.args) == 1
                 and isinstance(node.args[0], nodes.Const) and isinstance(node.args[0].value, str)
                 and node.dyn_args is None and node.dyn_kwargs is None)
        if not fixed:
            return node
        text = self.translate(node.args[0].value)
        if "%" in text and not node.kwargs:
            return node
        translation = nodes.MarkSafeIfAutoescape(nodes.Const(text, lineno=node.lineno), lineno=node.lineno)
        if not node.kwargs:
            return translation
        variables = nodes.Dict([nodes.Pair(nodes.Const(keyword.key), keyword.value) for keyword in node.kwargs],
                               lineno=node.lineno)
        return nodes.Mod(translation, variables, lineno=node.lineno)


def _escape_output(value: Any) -> str:
    """markupsafe.escape as a plain string: the same characters, without building a Markup object."""
    if type(value) is str:
        return _escaped_text(value)
    if hasattr(value, "__html__"):
        return value.__html__()  # type: ignore[no-any-return]
    return _escaped_text(str(value))


class _PageTemplate(Template):
    """A template whose autoescaped `{{ output }}` costs no Markup object. Compiled templates call `escape` for
    one thing only, an output expression (jinja2.compiler.CodeGenerator._output_child_pre), and its result is
    only ever joined into the page, or into a buffer that Jinja itself wraps in Markup (macros, `{% set %}`
    blocks, `caller()`): a str with the same characters does the same. A history page escapes some three
    hundred values, and building their Markup objects was a quarter of its rendering."""

    @classmethod
    def from_code(cls, environment: Environment, code: Any, globals: Any,  # noqa: A002 - Jinja's own signature
                  uptodate: Callable[[], bool] | None = None) -> Template:
        template = super().from_code(environment, code, globals, uptodate)
        template.root_render_func.__globals__["escape"] = _escape_output  # the compiled module's namespace
        return template


class PortalEnvironment(Environment):
    """The portal's Jinja environment.

    - Fixed texts are translated when a template is compiled (`_FixedTexts`), with `translate`, the catalog's
      gettext, set by `environment`.
    - `row.status` on a plain dict (the pages' rows and summaries) reads the key without first raising and
      catching AttributeError, as Environment.getattr does for every such access. Names of dict attributes
      (`items`, `get`...) still go the long way, so they resolve exactly as before.
    - Calls from templates take a shorter way through the context (`_Context`), and output is escaped into plain
      strings (`_PageTemplate`).
    A test renders the pages through this environment and through a stock one, and compares them."""

    context_class = _Context
    template_class = _PageTemplate
    translate: Callable[[str], str] | None = None

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        template = super()._parse(source, name, filename)
        if self.translate is None:
            return template
        return _FixedTexts(self.translate).visit(template)  # type: ignore[no-any-return]

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


@cache
def environment(language: str) -> Environment:
    env = PortalEnvironment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    catalog = translations(language)
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    env.translate = catalog.gettext
    return env


@dataclass(frozen=True)
class Formatter:
    """Amounts and dates as a reader of `locale` writes them: "1.234,50 €" in Belgium, "€1,234.50" in Ireland.

    A page formats dozens of amounts and dates, and Babel's functions parse the locale and look up its patterns
    and symbols on every call (about 40 µs an amount). What depends only on the locale and the currency or
    style is therefore worked out once per process (see `_money_form`, `_date_pattern`); the output is the same,
    character for character."""

    locale: str

    @classmethod
    def for_language(cls, language: str, customer_locale: str | None) -> Formatter:
        # Keep the customer's region when it fits the language shown: fr + "nl-BE" -> fr_BE.
        region = (customer_locale or "").replace("_", "-").partition("-")[2].upper()
        return _formatter(cls, language, region)

    def money(self, minor: int, currency: str) -> str:
        form = _money_form(self.locale, currency)
        if form is None:
            return str(format_currency(to_decimal(minor, currency), currency, locale=self.locale))
        return form.format(minor)

    def date(self, value: dt.date | None, style: str = "medium") -> str:
        if not value:
            return ""
        return _format_date(self.locale, style, value.date() if isinstance(value, dt.datetime) else value)

    def datetime(self, value: dt.datetime | None) -> str:
        return format_datetime(value, format="medium", locale=self.locale, tzinfo=dt.UTC) if value else ""


@lru_cache(maxsize=256)
def _formatter(cls: type[Formatter], language: str, region: str) -> Formatter:
    if region:
        try:
            return cls(str(Locale.parse(f"{language}_{region}")))
        except (UnknownLocaleError, ValueError):
            pass
    return cls(language)


@lru_cache(maxsize=256)
def _date_pattern(locale: str, style: str) -> tuple[DateTimePattern, Locale]:
    """What babel.dates.format_date looks up on every call, once: the parsed locale and its pattern."""
    parsed = Locale.parse(locale)
    return parse_pattern(get_date_format(style, locale=parsed) if style in ("full", "long", "medium", "short")
                         else style), parsed


@lru_cache(maxsize=16384)
def _format_date(locale: str, style: str, value: dt.date) -> str:
    # Invoices' dates are few (a few hundred days a year, times a handful of locales) and each is shown on many
    # pages, so the formatted text is kept: a page shows 40 of them.
    pattern, parsed = _date_pattern(locale, style)
    return str(pattern.apply(value, parsed))


_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True)
class _MoneyForm:
    """Babel's standard currency pattern for one locale and currency, taken apart once: prefix and suffix
    (positive, negative) with the currency symbol in place, the grouping, and the two separators.

    `format` repeats NumberPattern.apply for the case it handles (an integer amount of minor units whose
    exponent is the one Babel rounds the currency to, so nothing is ever rounded), step by step."""

    prefix: tuple[str, str]
    suffix: tuple[str, str]
    min_int: int
    grouping: tuple[int, int]
    group: str
    decimal: str
    digits: int
    code: str
    symbol: str

    def format(self, minor: int) -> str:
        negative = int(minor < 0)
        whole, fraction = divmod(abs(minor), 10**self.digits)
        value = str(whole)
        if len(value) < self.min_int:
            value = "0" * (self.min_int - len(value)) + value
        size, grouped = self.grouping[0], ""
        while len(value) > size:
            grouped = self.group + value[-size:] + grouped
            value = value[:-size]
            size = self.grouping[1]
        number = value + grouped
        if self.digits:
            number += self.decimal + str(fraction).rjust(self.digits, "0")
        text = self.prefix[negative] + number + self.suffix[negative]
        if "¤" in text:
            text = text.replace("¤¤", self.code).replace("¤", self.symbol)
        return _QUOTED.sub(lambda m: m.group(1) or "'", text) if "'" in text else text


@lru_cache(maxsize=1024)
def _money_form(locale: str, currency: str) -> _MoneyForm | None:
    """The locale's standard currency pattern taken apart, or None where the general path must run: an unknown
    currency (which raises there, as before), scientific, significant-digit or scaled patterns, a pattern that
    spells the currency's name (its plural depends on the amount), or a currency whose exponent Babel would
    round to."""
    try:
        parsed = Locale.parse(locale)
        pattern = parsed.currency_formats["standard"]
        digits = exponent(currency)
    except Exception:  # noqa: BLE001 - the general path raises what it always raised
        return None
    if (pattern.exp_prec or "@" in pattern.pattern or pattern.scale or pattern.number_pattern == ""
            or "¤¤¤" in "".join(pattern.prefix + pattern.suffix) or get_currency_precision(currency) != digits):
        return None
    return _MoneyForm(
        prefix=pattern.prefix, suffix=pattern.suffix, min_int=pattern.int_prec[0], grouping=pattern.grouping,
        group=get_group_symbol(parsed), decimal=get_decimal_symbol(parsed), digits=digits,
        code=currency.upper(), symbol=parsed.currency_symbols.get(currency, currency))
