"""Patient files for the local directory: CSV and FHIR Bundles, and the line or entry a bad row is named by."""

from __future__ import annotations

from datetime import date

import orjson
import pytest

from broker.demographics.fhir import ODS_SYSTEM, patient_from_fhir
from broker.demographics.importer import PatientFileError, read_patients
from broker.models import Patient


def fhir_patient(nhs_number: str, born: str, family: str, ods: str | None, **extra: object) -> dict[str, object]:
    resource: dict[str, object] = {
        "resourceType": "Patient",
        "id": nhs_number,
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number}],
        "birthDate": born,
        "name": [{"use": "usual", "family": family, "given": ["Demo"]}],
    }
    if ods is not None:
        resource["generalPractitioner"] = [{"type": "Organization", "identifier": {"system": ODS_SYSTEM, "value": ods}}]
    resource.update(extra)
    return resource


def test_csv() -> None:
    text = (
        "nhs_number,date_of_birth,family_name,gp_ods_code\n"
        "9990000018,1967-01-26,Smith,a99901\n"
        "\n"
        "999 000 0026,19850714,O'Brien-Núñez,\n"
    )
    assert read_patients(text) == [
        Patient("9990000018", date(1967, 1, 26), "Smith", "A99901"),
        Patient("9990000026", date(1985, 7, 14), "O'Brien-Núñez", ""),
    ]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("9990000019,1967-01-26,Smith,A99901", "line 3: the NHS number"),
        ("9990000026,1967-13-26,Smith,A99901", "line 3: date_of_birth"),
        ("9990000026,1967-01-26,,A99901", "line 3: family_name is empty"),
    ],
)
def test_csv_bad_row_names_its_line(row: str, problem: str) -> None:
    text = f"nhs_number,date_of_birth,family_name,gp_ods_code\n9990000018,1967-01-26,Smith,A99901\n{row}\n"
    with pytest.raises(PatientFileError, match=problem):
        read_patients(text)


def test_csv_needs_its_columns() -> None:
    with pytest.raises(PatientFileError, match="missing \\['gp_ods_code'\\]"):
        read_patients("nhs_number,date_of_birth,family_name\n9990000018,1967-01-26,Smith\n")


def test_fhir_bundle() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": fhir_patient("9990000018", "1967-01-26", "Smith", "A99901")},
            {"resource": {"resourceType": "Organization", "id": "A99901"}},
            {"resource": fhir_patient("9990000042", "2001-11-30", "Taylor", None)},
        ],
    }
    assert read_patients(orjson.dumps(bundle).decode()) == [
        Patient("9990000018", date(1967, 1, 26), "Smith", "A99901"),
        Patient("9990000042", date(2001, 11, 30), "Taylor", ""),
    ]


def test_fhir_bundle_bad_patient_names_it() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": fhir_patient("9990000018", "1967-01-26", "Smith", "A99901")},
            {"resource": fhir_patient("9990000018", "1967-01-26", "Smith", "A99901", name=[])},
        ],
    }
    with pytest.raises(PatientFileError, match="Patient 2 of the Bundle: Patient has no current family name"):
        read_patients(orjson.dumps(bundle).decode())


@pytest.mark.parametrize("text", ["{not json", '{"resourceType": "Patient"}', '{"resourceType": "Bundle", "entry": 3}'])
def test_not_a_bundle(text: str) -> None:
    with pytest.raises(PatientFileError):
        read_patients(text)


def test_current_name_and_practice_win_over_ended_ones() -> None:
    resource = fhir_patient(
        "9990000018",
        "1967-01-26",
        "Smith",
        None,
        name=[
            {"use": "usual", "family": "Jones", "period": {"start": "1967-01-26", "end": "1990-01-01"}},
            {"use": "usual", "family": "Smith", "period": {"start": "1990-01-01"}},
        ],
        generalPractitioner=[
            {"identifier": {"system": ODS_SYSTEM, "value": "B11111", "period": {"end": "2020-01-01"}}},
            {"identifier": {"system": ODS_SYSTEM, "value": "A99901", "period": {"start": "2020-01-01"}}},
        ],
    )
    assert patient_from_fhir(resource) == Patient("9990000018", date(1967, 1, 26), "Smith", "A99901")


def test_partial_birth_date_is_unknown() -> None:
    assert patient_from_fhir(fhir_patient("9990000018", "1967", "Smith", "A99901")).date_of_birth is None
