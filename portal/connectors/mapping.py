"""Declarative mapping from an upstream item (any JSON object) to a Quittance customer and invoice body.

A mapping is data, not code, so that it can live in a connector's settings and be checked before it runs:

    {"external_id": {"template": "molink-{id}"},
     "customer": {"external_id": "notice.operator.id", "name": "notice.operator.name"},
     "status": {"path": "state", "map": {"validated": "open", "paid": "paid"}},
     "currency": {"const": "EUR"},
     "total": {"path": "prices.total_ttc_cents", "minor_units": true},
     "lines": [{"description": "notice.title", "quantity": {"const": "1"},
                "unit_price": {"path": "prices.total_ht_cents", "minor_units": true},
                "vat_rate": "prices.vat_rate", "total": {"path": "prices.total_ht_cents", "minor_units": true}}]}

Every rule yields text (or nothing): the bodies it builds are then validated exactly as the machine API
validates a pushed body, so the mapping never decides what a valid invoice is. Numbers are never floats:
upstream JSON is read with `loads_exact` (JSON numbers become Decimal), minor units are formatted with the
currency's exponent, and a binary float handed in by other means is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator

from portal.money import MoneyError, format_minor
from portal.schemas.models import Strict
from portal.schemas.validation import refusal, validate

INVOICE_FIELDS = ("external_id", "number", "kind", "status", "issue_date", "due_date", "delivery_date", "currency",
                  "total", "amount_due", "title", "header_note", "footer_note", "vat_mention", "store")
CUSTOMER_FIELDS = ("external_id", "name", "email", "locale", "vat_number")
LINE_FIELDS = ("description", "quantity", "unit_price", "vat_rate", "total")
REQUIRED = ("external_id", "status", "currency", "total", "customer.external_id", "customer.name")
MONEY_FIELDS = frozenset({"total", "amount_due", "lines.unit_price", "lines.total"})
DATE_FIELDS = frozenset({"issue_date", "due_date", "delivery_date"})
RULE_KEYS = frozenset({"path", "const", "template", "map", "default", "minor_units", "date"})
SOURCES = ("path", "const", "template")
ROOT = "$"   # a path that starts with "$." is read from the whole item (in "each" lines: not from the element)

_SEGMENT = re.compile(r"[^.\s{}\[\]]+")
_MINOR = re.compile(r"-?[0-9]+")


def loads_exact(data: bytes | str) -> Any:
    """JSON with every number kept exact: 12.30 becomes Decimal("12.30"), never a float."""
    return json.loads(data, parse_float=Decimal, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def split_path(path: str) -> tuple[str, ...] | None:
    """"notice.operator.id" -> ("notice", "operator", "id"); None if the text is not a dotted path."""
    parts = tuple(path.split("."))
    if not path or not all(_SEGMENT.fullmatch(part) for part in parts):
        return None
    return parts


def resolve(data: Any, path: tuple[str, ...] | str) -> Any:
    """The value at a dotted path, or None when any step is missing. A numeric segment indexes a list."""
    parts = split_path(path) if isinstance(path, str) else path
    if parts is None:
        return None
    for part in parts:
        if isinstance(data, MappingABC):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def as_text(value: Any) -> str | None:
    """A scalar from upstream JSON as text: strings as they are, integers and exact decimals written out.
    Raises ValueError for what cannot be a field's text (objects, lists, booleans, floats)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"is {str(value).lower()}, not text or a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"is {value}, not a finite number")
        return format(value, "f")
    if isinstance(value, float):
        raise ValueError("is a binary float; amounts are read exactly (JSON numbers as decimals), never as floats")
    if isinstance(value, (dict, list)):
        raise ValueError(f"is {'an object' if isinstance(value, dict) else 'a list'}, not a single value")
    raise ValueError(f"is a {type(value).__name__}, not text or a number")


def minor_units_text(value: Any, currency: str | None) -> str | None:
    """Integer minor units (1234, "1234", or an integral JSON number) as the currency's decimal string: 1234 EUR
    -> "12.34", 1234 JPY -> "1234". Exact: integers all the way."""
    if value is None:
        return None
    if isinstance(value, (bool, float, dict, list)):
        as_text(value)  # raises with the reason
    if isinstance(value, int):
        minor = value
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        minor = int(value)
    elif isinstance(value, str) and _MINOR.fullmatch(value):
        minor = int(value)
    else:
        raise ValueError(f"{_show(value)} is not a whole number of minor units")
    if currency is None:
        raise ValueError("minor units need the invoice's currency, which is missing")
    try:
        return format_minor(minor, currency)
    except MoneyError as exc:
        raise ValueError(f"cannot read minor units: {exc}") from exc


def date_text(text: str | None) -> str | None:
    """"2026-11-02" or an ISO 8601 date-time ("2026-11-02T18:30:00+01:00") -> "2026-11-02": the calendar date
    as the upstream wrote it (its own time zone), which is what a document date means."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        return dt.datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise ValueError(f"{_show(text)} is not an ISO 8601 date or date-time") from None


def _show(value: Any) -> str:
    text = repr(value if not isinstance(value, Decimal) else format(value, "f"))
    return text if len(text) <= 60 else text[:57] + "..."


class MappingError(ValueError):
    """An item the mapping cannot read; `problems` names each field with what is wrong."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class Rule:
    """How one Quittance field is read from an item."""

    name: str
    path: tuple[str, ...] | None = None
    from_root: bool = False
    const: str | None = None
    template: tuple[tuple[str, tuple[str, ...] | None, bool], ...] | None = None
    value_map: dict[str, str | None] | None = None
    default: str | None = None
    minor_units: bool = False
    date: bool = False

    @property
    def source(self) -> str:
        if self.path is not None:
            return ("$." if self.from_root else "") + ".".join(self.path)
        if self.template is not None:
            return "template"
        return "constant"

    def value(self, element: Any, item: Any, currency: str | None) -> str | None:
        if self.const is not None:
            raw: Any = self.const
        elif self.template is not None:
            raw = self._render(element, item)
        else:
            assert self.path is not None
            raw = resolve(item if self.from_root else element, self.path)
        if raw is None:
            if self.default is None:
                return None
            raw = self.default
        if self.value_map is not None:
            text = as_text(raw)
            if text not in self.value_map:
                known = ", ".join(repr(key) for key in self.value_map)
                raise ValueError(f"{_show(text)} (from {self.source}) is not one of the mapped values ({known})")
            raw = self.value_map[text]
        if self.minor_units:
            return minor_units_text(raw, currency)
        text = as_text(raw)
        return date_text(text) if self.date else text

    def _render(self, element: Any, item: Any) -> str:
        parts = []
        assert self.template is not None
        for literal, path, from_root in self.template:
            parts.append(literal)
            if path is None:
                continue
            value = as_text(resolve(item if from_root else element, path))
            if value is None:
                raise ValueError(f"{'.'.join(path)} is missing for the template")
            parts.append(value)
        return "".join(parts)


@dataclass(frozen=True)
class MappedItem:
    """What one upstream item becomes: a customer body (CustomerIn) and an invoice body (BatchInvoice)."""

    external_id: str
    customer_external_id: str
    customer: dict[str, Any]
    invoice: dict[str, Any]


@dataclass(frozen=True)
class LineRules:
    each: tuple[str, ...] | None
    lines: tuple[dict[str, Rule], ...]


class Mapping:
    """A checked mapping. `Mapping(spec)` raises InvalidInput naming every problem; `apply(item)` reads one
    item."""

    def __init__(self, spec: Any) -> None:
        """Raises InvalidInput with a FieldError (a JSON pointer under /mapping) for every problem."""
        validate(MappingSpec, spec, "/mapping")
        fields = _normalized(spec)
        self.rules: dict[str, Rule] = {
            name: _rule(name, rule_spec) for name, rule_spec in fields.items() if name != "lines"}
        self.line_rules = _line_rules(fields.get("lines"))

    def apply(self, item: Any) -> MappedItem:
        """Raises MappingError naming every field of this item that cannot be read."""
        if not isinstance(item, dict):
            raise MappingError([("item", f"is {type(item).__name__}, not an object")])
        problems: list[tuple[str, str]] = []
        values: dict[str, str | None] = {}
        currency_rule = self.rules["currency"]
        ordered = [currency_rule, *(rule for name, rule in self.rules.items() if name != "currency")]
        currency: str | None = None
        for rule in ordered:
            try:
                values[rule.name] = rule.value(item, item, currency)
            except ValueError as exc:
                problems.append((rule.name, str(exc)))
                values[rule.name] = None
            if rule is currency_rule:
                currency = values["currency"]
        lines = self._lines(item, currency, problems)
        for name in REQUIRED:
            if values.get(name) is None and not any(p[0] == name for p in problems):
                problems.append((name, f"missing (nothing at {self.rules[name].source})"))
        if problems:
            raise MappingError(problems)
        customer = {name.removeprefix("customer."): value for name, value in values.items()
                    if name.startswith("customer.") and name != "customer.external_id" and value is not None}
        invoice: dict[str, Any] = {name: value for name, value in values.items()
                                   if not name.startswith("customer.") and value is not None}
        invoice["customer"] = values["customer.external_id"]
        if lines is not None:
            invoice["lines"] = lines
        return MappedItem(external_id=invoice.pop("external_id"),
                          customer_external_id=str(values["customer.external_id"]),
                          customer=customer, invoice=invoice)

    def source_of(self, pointer: str) -> str | None:
        """Where a field of the built body came from: "/total" -> "prices.total_ttc", "/lines/0/total" -> the
        line rule's path; None when the field is not mapped from a path."""
        parts = pointer.strip("/").split("/")
        if parts[0] == "lines" and len(parts) == 3 and parts[1].isdigit() and self.line_rules.lines:
            index = 0 if self.line_rules.each is not None else int(parts[1])
            if index < len(self.line_rules.lines) and parts[2] in self.line_rules.lines[index]:
                line_rule = self.line_rules.lines[index][parts[2]]
                return line_rule.source if line_rule.path is not None else None
            return None
        name = "customer.external_id" if parts == ["customer"] else ".".join(parts)
        rule = self.rules.get(name)
        return rule.source if rule is not None and rule.path is not None else None

    def _lines(self, item: dict[str, Any], currency: str | None,
               problems: list[tuple[str, str]]) -> list[dict[str, str | None]] | None:
        spec = self.line_rules
        if not spec.lines:
            return None
        if spec.each is None:
            elements: list[Any] = [item] * len(spec.lines)
            rules = list(spec.lines)
        else:
            found = resolve(item, spec.each)
            if found is None:
                return []
            if not isinstance(found, list):
                problems.append(("lines", f"{'.'.join(spec.each)} is not a list"))
                return None
            elements, rules = found, [spec.lines[0]] * len(found)
        lines = []
        for index, (element, line_rules) in enumerate(zip(elements, rules, strict=True)):
            line: dict[str, str | None] = {}
            for name, rule in line_rules.items():
                try:
                    line[name] = rule.value(element, item, currency)
                except ValueError as exc:
                    problems.append((f"lines[{index}].{name}", str(exc)))
                    continue
                if line[name] is None:
                    problems.append((f"lines[{index}].{name}", f"missing (nothing at {rule.source})"))
            lines.append(line)
        return lines


def _normalized(spec: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in spec.items() if key != "customer"}
    fields.update({f"customer.{key}": value for key, value in spec.get("customer", {}).items()})
    return fields


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _template_parts(text: str) -> tuple[tuple[str, tuple[str, ...] | None, bool], ...]:
    parts: list[tuple[str, tuple[str, ...] | None, bool]] = []
    for literal, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            parts.append((literal, None, False))
            continue
        if spec or conversion:
            raise ValueError(f"{{{field}}}: no format specs or conversions, only {{dotted.path}}")
        from_root = field.startswith(ROOT + ".")
        path = split_path(field.removeprefix(ROOT + ".") if from_root else field)
        if path is None:
            raise ValueError(f"{{{field}}} is not a dotted path")
        parts.append((literal, path, from_root))
    return tuple(parts)


def _rule(name: str, spec: Any) -> Rule:
    if isinstance(spec, str):
        spec = {"path": spec}
    path, from_root = None, False
    if "path" in spec:
        from_root = spec["path"].startswith(ROOT + ".")
        path = split_path(spec["path"].removeprefix(ROOT + ".") if from_root else spec["path"])
    default = spec.get("default")
    const = spec.get("const")
    return Rule(
        name=name, path=path, from_root=from_root,
        const=str(const) if const is not None else None,
        template=_template_parts(spec["template"]) if "template" in spec else None,
        value_map=dict(spec["map"]) if "map" in spec else None,
        default=str(default) if default is not None else None,
        minor_units=spec.get("minor_units", False), date=spec.get("date", False))


def _line_rules(spec: Any) -> LineRules:
    if spec is None:
        return LineRules(each=None, lines=())
    if isinstance(spec, list):
        return LineRules(each=None, lines=tuple(
            {name: _rule(f"lines.{name}", rule_spec) for name, rule_spec in line.items()}
            for line in spec))
    return LineRules(each=split_path(spec["each"]), lines=(
        {name: _rule(f"lines.{name}", rule_spec) for name, rule_spec in spec["fields"].items()},))


# The mapping as settings: pydantic models, so a bad mapping is refused with one error per field at its JSON
# pointer (/settings/mapping/lines/0/vat_rate), like every other body of the API.

def dotted_path(text: str) -> str:
    if split_path(text.removeprefix(ROOT + ".")) is None:
        raise refusal(f"{text!r} is not a dotted path such as \"notice.operator.id\"")
    return text


def template_text(text: str) -> str:
    if "{" not in text:
        raise refusal("text with {dotted.path} placeholders, e.g. \"molink-{id}\"")
    try:
        _template_parts(text)
    except ValueError as exc:
        raise refusal(str(exc)) from None
    return text


DottedPath = Annotated[str, AfterValidator(dotted_path)]


def scalar(value: Any) -> str | int:
    """Text or a whole number: one check with one message (a union would report each of its members)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise refusal("text or a whole number (write decimals as text, e.g. \"5.5\")")


Scalar = Annotated[Any, AfterValidator(scalar)]


class RuleSpec(Strict):
    """How one field is read: a path into the item, a constant or a template; then optionally mapped."""

    path: DottedPath | None = None
    const: Scalar | None = None
    template: Annotated[str, AfterValidator(template_text)] | None = None
    map: Annotated[dict[str, str | None], Field(min_length=1)] | None = None
    default: Scalar | None = None
    minor_units: bool = False
    date: bool = False

    @model_validator(mode="after")
    def one_source(self) -> RuleSpec:
        sources = [key for key in SOURCES if getattr(self, key) is not None]
        if len(sources) != 1:
            raise refusal("give exactly one of path, const or template"
                          + (f" (got {', '.join(sources)})" if sources else ""))
        return self


def _as_rule(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


def _kind(allowed: frozenset[str], flag: str, what: str) -> Any:
    def check(rule: RuleSpec) -> RuleSpec:
        if getattr(rule, flag):
            raise refusal(f"{flag}: only for {what} ({', '.join(sorted(allowed))})")
        return rule
    return AfterValidator(check)


# A field's rule: a dotted path as a shorthand for {"path": ...}. Amounts may read minor units, dates may
# read date-times; every other field is read as text.
TextRule = Annotated[RuleSpec, BeforeValidator(_as_rule), _kind(DATE_FIELDS, "date", "dates"),
                 _kind(MONEY_FIELDS, "minor_units", "amounts")]
MoneyRule = Annotated[RuleSpec, BeforeValidator(_as_rule), _kind(DATE_FIELDS, "date", "dates")]
DateRule = Annotated[RuleSpec, BeforeValidator(_as_rule), _kind(MONEY_FIELDS, "minor_units", "amounts")]


class CustomerMapping(Strict):
    external_id: TextRule
    name: TextRule
    email: TextRule | None = None
    locale: TextRule | None = None
    vat_number: TextRule | None = None


class LineMapping(Strict):
    description: TextRule
    quantity: TextRule
    unit_price: MoneyRule
    vat_rate: TextRule
    total: MoneyRule


class EachLine(Strict):
    """One line per element of a list in the item."""

    each: DottedPath
    fields: LineMapping


def _lines_kind(value: Any) -> str:
    return "lines[each]" if isinstance(value, dict) else "lines[list]"


# The tags carry "[" so that field errors keep the field's own path (portal.schemas.validation.field_errors).
Lines = Annotated[
    Annotated[list[LineMapping], Field(min_length=1), Tag("lines[list]")] | Annotated[EachLine, Tag("lines[each]")],
    Discriminator(_lines_kind)]


class MappingSpec(Strict):
    """Which upstream value gives each Quittance field (see the module's docstring)."""

    external_id: TextRule
    customer: CustomerMapping
    status: TextRule
    currency: TextRule
    total: MoneyRule
    amount_due: MoneyRule | None = None
    number: TextRule | None = None
    kind: TextRule | None = None
    issue_date: DateRule | None = None
    due_date: DateRule | None = None
    delivery_date: DateRule | None = None
    title: TextRule | None = None
    header_note: TextRule | None = None
    footer_note: TextRule | None = None
    vat_mention: TextRule | None = None
    store: TextRule | None = None
    lines: Lines | None = None
