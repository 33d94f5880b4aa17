"""NHS numbers, dates of birth, surnames and GPPROVIDER addresses (broker/nhs.py)."""

from __future__ import annotations

from datetime import date

import pytest

from broker import nhs
from broker.services.directory import DEMO_PATIENTS


def with_check_digit(first_nine: str) -> str:
    """The modulus 11 algorithm written out independently of broker/nhs.py."""
    weighted = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    digit = (11 - weighted % 11) % 11
    assert digit != 10, first_nine
    return first_nine + str(digit)


@pytest.mark.parametrize("first_nine", ["999000001", "999000002", "943476591", "401023213", "999999999"])
def test_valid_numbers(first_nine: str) -> None:
    assert nhs.is_valid_nhs_number(with_check_digit(first_nine))


def test_every_other_last_digit_is_invalid() -> None:
    number = with_check_digit("943476591")
    for digit in "0123456789":
        if digit != number[-1]:
            assert not nhs.is_valid_nhs_number(number[:9] + digit)


def test_remainder_ten_means_no_valid_number() -> None:
    # 999000014: 11 - (weighted sum mod 11) is 10, so no tenth digit makes it valid.
    assert nhs.check_digit("999000014") is None
    assert not any(nhs.is_valid_nhs_number("999000014" + d) for d in "0123456789")


def test_remainder_zero_gives_check_digit_zero() -> None:
    def weighted(text: str) -> int:
        return sum(int(d) * (10 - i) for i, d in enumerate(text))

    first_nine = next(f"99900{i:04d}" for i in range(10_000) if weighted(f"99900{i:04d}") % 11 == 0)
    assert nhs.check_digit(first_nine) == 0
    assert nhs.is_valid_nhs_number(first_nine + "0")


FULLWIDTH_NINES = "\uff19\uff19\uff19"


@pytest.mark.parametrize(
    "text", ["", "999000001", "99900000180", "999000001X", "999 000 0018", f"{FULLWIDTH_NINES}0000018"]
)
def test_malformed_numbers(text: str) -> None:
    assert not nhs.is_valid_nhs_number(text)


def test_demo_patients_have_valid_numbers_from_the_test_range() -> None:
    for patient in DEMO_PATIENTS:
        assert patient.nhs_number == with_check_digit(patient.nhs_number[:9])
        assert patient.nhs_number.startswith("999")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19670126", date(1967, 1, 26)),
        ("20000229", date(2000, 2, 29)),
        ("26011967", date(1967, 1, 26)),  # DDMMYYYY: no YYYYMMDD reading
        ("09011955", date(1955, 1, 9)),
        ("20102010", date(2010, 10, 20)),  # both readings are the same day
    ],
)
def test_dates_of_birth(text: str, expected: date) -> None:
    assert nhs.parse_date_of_birth(text) == expected


@pytest.mark.parametrize("text", ["", "1967012", "19671301", "19670230", "1967-01-26", "abcdefgh", "00000000"])
def test_bad_dates_of_birth(text: str) -> None:
    assert nhs.parse_date_of_birth(text) is None


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("SMITH", "Smith"),
        ("OBRIENNUNEZ", "O'Brien-Núñez"),
        ("o brien nunez", "O'Brien-Núñez"),
        ("MÜLLER", "Muller"),
        ("M\udcfcLLER", "Müller"),  # Latin-1 header bytes as aiohttp surrogate-escapes them
        ("STRASSE", "Straße"),
        ("SMITH-JONES", "Smith Jones"),
    ],
)
def test_surnames_match(given: str, recorded: str) -> None:
    assert nhs.surnames_match(given, recorded)


@pytest.mark.parametrize(("given", "recorded"), [("SMYTH", "Smith"), ("", ""), ("-", "-"), ("SMITHS", "Smith")])
def test_surnames_differ(given: str, recorded: str) -> None:
    assert not nhs.surnames_match(given, recorded)


def test_gp_address() -> None:
    address = nhs.parse_gp_address("GPPROVIDER_9990000018_19670126_SMITH")
    assert address == nhs.GpAddress("9990000018", "19670126", "SMITH")
    assert nhs.parse_gp_address("GPPROVIDER_9990000018_19670126_DE_LA_CRUZ") == nhs.GpAddress(
        "9990000018", "19670126", "DE_LA_CRUZ"
    )


@pytest.mark.parametrize("text", ["X26ABC1", "GPPROVIDE_1_2_3", "NHS_9990000018_19670126_SMITH"])
def test_not_gp_addresses(text: str) -> None:
    assert not nhs.is_gp_address(text)
    assert nhs.parse_gp_address(text) is None


@pytest.mark.parametrize(
    "text", ["GPPROVIDER_", "GPPROVIDER_9990000018", "GPPROVIDER_9990000018_19670126", "GPPROVIDER__19670126_X"]
)
def test_incomplete_gp_addresses(text: str) -> None:
    assert nhs.is_gp_address(text)
    assert nhs.parse_gp_address(text) is None
