"""Reads a patient file for the local directory: CSV (nhs_number, date_of_birth, family_name, gp_ods_code)
or a FHIR Bundle of Patient resources, told apart by content."""

from __future__ import annotations

import csv
import io
from datetime import date

import orjson

from broker import nhs
from broker.demographics.fhir import FhirError, bundle_patients, patient_from_fhir
from broker.models import Patient

CSV_COLUMNS = ("nhs_number", "date_of_birth", "family_name", "gp_ods_code")


class PatientFileError(ValueError):
    """A patient file could not be read; the message names the line (CSV) or entry (FHIR) at fault."""


def read_patients(text: str) -> list[Patient]:
    """Every patient of a CSV or FHIR Bundle (JSON) text, checked; raises PatientFileError."""
    if text.lstrip().startswith("{"):
        return _from_bundle(text)
    return _from_csv(text)


def _from_bundle(text: str) -> list[Patient]:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise PatientFileError(f"not JSON: {exc}") from None
    try:
        resources = bundle_patients(document)
    except FhirError as exc:
        raise PatientFileError(str(exc)) from None
    patients = []
    for number, resource in enumerate(resources, start=1):
        try:
            patients.append(_checked(patient_from_fhir(resource)))
        except (FhirError, ValueError) as exc:
            raise PatientFileError(f"Patient {number} of the Bundle: {exc}") from None
    return patients


def _from_csv(text: str) -> list[Patient]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise PatientFileError(f"line 1: the CSV header needs columns {', '.join(CSV_COLUMNS)}; missing {missing}")
    patients = []
    for row in reader:
        line = reader.line_num
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue
        try:
            patient = Patient(
                nhs_number=(row["nhs_number"] or "").replace(" ", "").strip(),
                date_of_birth=_date(row["date_of_birth"] or ""),
                family_name=(row["family_name"] or "").strip(),
                gp_ods_code=(row["gp_ods_code"] or "").strip().upper(),
            )
            patients.append(_checked(patient))
        except ValueError as exc:
            raise PatientFileError(f"line {line}: {exc}") from None
    return patients


def _date(text: str) -> date:
    value = text.strip()
    try:
        return date.fromisoformat(value) if "-" in value else _compact(value)
    except ValueError:
        raise ValueError(f"date_of_birth must be YYYY-MM-DD or YYYYMMDD, not {value!r}") from None


def _compact(value: str) -> date:
    found = nhs.parse_date_of_birth(value)
    if found is None:
        raise ValueError(value)
    return found


def _checked(patient: Patient) -> Patient:
    if not nhs.is_valid_nhs_number(patient.nhs_number):
        raise ValueError("the NHS number is not 10 digits with a valid check digit")
    if not patient.family_name:
        raise ValueError("family_name is empty")
    return patient
