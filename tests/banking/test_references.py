"""OGM and RF references: generated ones always validate, survive the ways people write them, and a typo is caught."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from portal.banking.references import (
    InvalidReference,
    ReferenceOverflow,
    StructuredReference,
    find_references,
    normalise_reference,
    ogm_reference,
    parse_reference,
    reference_for,
    rf_reference,
)

ogm_numbers = st.integers(min_value=1, max_value=9_999_999_999)
rf_numbers = st.integers(min_value=0, max_value=10**21 - 1)
# Free text around a reference: words and punctuation, never long digit runs that could form a reference.
filler = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz ÉéàüABCXYZ.,:;-()!"), max_size=30)


def test_known_values_from_the_standards() -> None:
    assert normalise_reference("+++010/8068/17183+++") == StructuredReference("ogm", "010806817183")
    assert normalise_reference("rf18 5390 0754 7034") == StructuredReference("rf", "RF18539007547034")
    assert ogm_reference(108068171).display == "+++010/8068/17183+++"
    assert rf_reference(539007547034).display == "RF18 5390 0754 7034"


def test_the_country_chooses_the_kind() -> None:
    assert reference_for("BE", 42).kind == "ogm"
    assert reference_for("be", 42).kind == "ogm"
    assert reference_for("NL", 42).kind == "rf"
    assert reference_for("FR", 42).kind == "rf"


def test_ogm_check_digits_zero_remainder_gives_97() -> None:
    # 97 divides 0000000097 exactly, so the check digits are 97, not 00.
    assert ogm_reference(97).value == "000000009797"


@given(number=ogm_numbers)
def test_generated_ogm_validates_and_has_twelve_digits(number: int) -> None:
    reference = ogm_reference(number)
    assert reference.kind == "ogm"
    assert len(reference.value) == 12 and reference.value.isdigit()
    assert int(reference.value[:10]) == number
    assert normalise_reference(reference.display) == reference
    assert normalise_reference(reference.value) == reference


@given(number=rf_numbers)
def test_generated_rf_validates(number: int) -> None:
    reference = rf_reference(number)
    assert reference.kind == "rf" and reference.value.startswith("RF")
    assert reference.value[4:] == str(number)
    assert normalise_reference(reference.display.lower()) == reference


@given(prefix=st.text(alphabet="0123456789", min_size=1, max_size=4), number=st.integers(1, 999_999))
def test_an_organization_prefix_leads_the_ogm(prefix: str, number: int) -> None:
    reference = ogm_reference(number, prefix)
    assert reference.value.startswith(prefix)
    assert int(reference.value[len(prefix):10]) == number


@given(prefix=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=6), number=st.integers(0, 10**12))
def test_an_organization_prefix_leads_the_rf_payload(prefix: str, number: int) -> None:
    reference = rf_reference(number, prefix.lower())
    assert reference.value[4:] == f"{prefix}{number}"
    assert normalise_reference(reference.display) == reference


def test_numbers_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ReferenceOverflow, match="does not fit"):
        ogm_reference(12_345_678_901)
    with pytest.raises(ReferenceOverflow, match="does not fit"):
        ogm_reference(123_456, prefix="99999")
    with pytest.raises(ReferenceOverflow, match="all zeros"):
        ogm_reference(0)
    with pytest.raises(ReferenceOverflow, match="at most 21"):
        rf_reference(10**21)
    with pytest.raises(ReferenceOverflow, match="letters and digits"):
        rf_reference(1, prefix="Q-7")
    with pytest.raises(ReferenceOverflow, match="must be digits"):
        ogm_reference(1, prefix="A1")
    with pytest.raises(ReferenceOverflow, match="negative"):
        rf_reference(-1)


def test_a_reference_cannot_be_built_invalid() -> None:
    for kind, value in [("ogm", "010806817180"), ("ogm", "+++010/8068/17183+++"), ("rf", "RF18 5390 0754 7034"),
                        ("rf", "RF17539007547034"), ("iban", "BE68539007547034")]:
        with pytest.raises(InvalidReference):
            StructuredReference(kind, value)  # type: ignore[arg-type]


def _write_ogm(reference: StructuredReference, style: int) -> str:
    digits = reference.value
    grouped = f"{digits[:3]}/{digits[3:7]}/{digits[7:]}"
    return [f"+++{grouped}+++", f"***{grouped}***", f"+++ {grouped} +++", grouped, digits][style]


def _write_rf(reference: StructuredReference, style: int) -> str:
    return [reference.display, reference.value, reference.value.lower(), reference.display.lower()][style % 4]


@given(number=ogm_numbers, style=st.integers(0, 4), before=filler, after=filler)
def test_ogm_round_trips_through_noisy_remittance_text(number: int, style: int, before: str, after: str) -> None:
    reference = ogm_reference(number)
    text = f"{before} {_write_ogm(reference, style)} {after}"
    assert parse_reference(text) == reference


@given(number=rf_numbers, style=st.integers(0, 3), before=filler, after=filler)
def test_rf_round_trips_through_noisy_remittance_text(number: int, style: int, before: str, after: str) -> None:
    reference = rf_reference(number)
    # A word glued to the reference would change it; a separator is always there in real remittance text.
    text = f"{before} {_write_rf(reference, style)}, {after}"
    assert parse_reference(text) == reference


@given(number=ogm_numbers, position=st.integers(0, 11), delta=st.integers(1, 9))
def test_a_changed_ogm_digit_is_detected(number: int, position: int, delta: int) -> None:
    digits = list(ogm_reference(number).value)
    digits[position] = str((int(digits[position]) + delta) % 10)
    changed = "".join(digits)
    # Mod 97 catches every single-digit change except one that turns the number into 0000000000.
    assume(int(changed[:10]) != 0)
    with pytest.raises(InvalidReference, match="check digits do not match"):
        normalise_reference(changed)
    assert parse_reference(f"betaling +++{changed[:3]}/{changed[3:7]}/{changed[7:]}+++") is None


@given(number=rf_numbers, position=st.integers(0), delta=st.integers(1, 9), data=st.data())
def test_a_changed_rf_digit_is_detected(number: int, position: int, delta: int, data: st.DataObject) -> None:
    value = rf_reference(number).value
    index = data.draw(st.integers(2, len(value) - 1))
    changed = value[:index] + str((int(value[index]) + delta) % 10) + value[index + 1:]
    with pytest.raises(InvalidReference, match="check digits do not match"):
        normalise_reference(changed)
    assert parse_reference(f"payment {changed} thanks") is None


def test_invalid_references_say_which_check_failed() -> None:
    with pytest.raises(InvalidReference, match="12 digits"):
        normalise_reference("+++010/8068/1718+++")
    with pytest.raises(InvalidReference, match="5 to 25 characters"):
        normalise_reference("RF1")
    with pytest.raises(InvalidReference, match="neither an RF creditor reference nor"):
        normalise_reference("invoice 42")


def test_parse_reference_ignores_text_without_a_reference() -> None:
    assert parse_reference("") is None
    assert parse_reference("Factuur INV-2026-0107, dank u") is None
    # A Belgian account number has the same mod-97 check as an OGM but is written in groups of four.
    assert parse_reference("from BE68 5390 0754 7034 and BE68539007547034") is None


def test_parse_reference_prefers_the_delimited_form_and_finds_all() -> None:
    text = "ref 000000004343 or rather +++000/0000/04242+++ (RF18 5390 0754 7034)"
    assert parse_reference(text) == ogm_reference(42)
    assert find_references(text) == [ogm_reference(42), rf_reference(539007547034), ogm_reference(43)]


def test_rf_followed_by_more_groups_keeps_the_valid_reference() -> None:
    assert parse_reference("RF18 5390 0754 7034 2026 invoice") == rf_reference(539007547034)


@given(text=st.text(max_size=200))
def test_any_text_gives_a_valid_reference_or_none_never_an_error(text: str) -> None:
    for reference in find_references(text):
        assert normalise_reference(reference.value) == reference
    assert parse_reference(text) in (None, *find_references(text))


def test_digits_of_other_scripts_are_not_references() -> None:
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "010806817183")
    assert parse_reference(f"+++{arabic_indic[:3]}/{arabic_indic[3:7]}/{arabic_indic[7:]}+++") is None
    with pytest.raises(InvalidReference):
        normalise_reference(arabic_indic)
