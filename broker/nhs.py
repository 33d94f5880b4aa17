"""NHS identifiers and patient addressing, pure: NHS number check digits, dates of birth, surnames, GPPROVIDER."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

#: `mex-To` prefix that addresses a patient's registered GP practice (mesh-ecosystem.md section 4).
GP_PREFIX = "GPPROVIDER_"
#: Years outside this range are not plausible dates of birth; the bound is also what keeps DDMMYYYY and
#: YYYYMMDD from ever both being valid for one string (a YYYY starting 18..21 is not a month).
_YEARS = range(1800, 2200)
#: Characters a surname comparison ignores besides accents and case (the MESH guidance names none; people
#: type double-barrelled and Irish names with and without them).
_IGNORED = frozenset(" -\u2010\u2011\u2012\u2013\u2014'\u2019`.")


def check_digit(first_nine: str) -> int | None:
    """The modulus 11 check digit of nine digits, or None when the remainder makes the number unusable."""
    total = sum(int(digit) * weight for digit, weight in zip(first_nine, range(10, 1, -1), strict=True))
    digit = 11 - total % 11
    if digit == 11:
        return 0
    if digit == 10:
        return None
    return digit


def is_valid_nhs_number(text: str) -> bool:
    """Ten ASCII digits whose last is the modulus 11 check digit of the first nine."""
    if len(text) != 10 or not text.isascii() or not text.isdigit():
        return False
    return check_digit(text[:9]) == int(text[9])


def parse_date_of_birth(text: str) -> date | None:
    """YYYYMMDD, or DDMMYYYY when only that reading is a real date; None when neither or both disagree."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return None
    readings = {
        found
        for found in (_date(text[0:4], text[4:6], text[6:8]), _date(text[4:8], text[2:4], text[0:2]))
        if found is not None
    }
    return readings.pop() if len(readings) == 1 else None


def _date(year: str, month: str, day: str) -> date | None:
    if int(year) not in _YEARS:
        return None
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def normalise_surname(text: str) -> str:
    """A surname as compared: accents dropped (NFKD), case folded, spaces, hyphens and apostrophes removed."""
    decomposed = unicodedata.normalize("NFKD", _as_text(text))
    kept = (c for c in decomposed if not unicodedata.combining(c) and c not in _IGNORED)
    return "".join(kept).casefold()


def surnames_match(given: str, recorded: str) -> bool:
    normalised = normalise_surname(given)
    return bool(normalised) and normalised == normalise_surname(recorded)


def _as_text(value: str) -> str:
    """Header values arrive as UTF-8 with undecodable bytes escaped; clients such as `requests` send Latin-1.

    Re-reading escaped bytes as Latin-1 lets `Müller` sent either way compare equal to the recorded name.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


@dataclass(frozen=True, slots=True)
class GpAddress:
    """The parts of a `GPPROVIDER_<NHS number>_<date of birth>_<surname>` address, unchecked."""

    nhs_number: str
    date_of_birth: str
    surname: str


def is_gp_address(recipient: str) -> bool:
    return recipient.upper().startswith(GP_PREFIX)


def parse_gp_address(recipient: str) -> GpAddress | None:
    """Split a GPPROVIDER address into its three parts; None when it is not one or a part is missing.

    The surname is everything after the second delimiter, so a name that itself holds `_` stays whole.
    """
    if not is_gp_address(recipient):
        return None
    parts = recipient[len(GP_PREFIX) :].split("_", 2)
    if len(parts) != 3 or not all(part.strip() for part in parts):
        return None
    nhs_number, date_of_birth, surname = (part.strip() for part in parts)
    return GpAddress(nhs_number, date_of_birth, surname)
