"""FHIR R4 Patient resources (PDS's shape) as Patients: shared by the PDS client and the Bundle importer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from broker.models import Patient

#: The identifier systems PDS uses for NHS numbers and for the GP practice's ODS code.
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
#: Name uses that are a patient's current name, best first (PDS returns `usual`).
_NAME_USES = ("usual", "official", None)


class FhirError(ValueError):
    """A resource is not a Patient we can read; the message says what is wrong (never the patient's data)."""


def patient_from_fhir(resource: Any) -> Patient:
    """The Patient a FHIR Patient resource describes (its current family name and current GP practice).

    A partial birthDate (`1967` or `1967-01`) reads as unknown: a cross-check cannot match it.
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise FhirError("not a FHIR Patient resource")
    nhs_number = _nhs_number(resource)
    return Patient(nhs_number, _birth_date(resource.get("birthDate")), _family_name(resource), _gp_ods_code(resource))


def bundle_patients(bundle: Any) -> list[Any]:
    """The Patient resources of a Bundle's entries, in order."""
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise FhirError("not a FHIR Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError("Bundle.entry is not a list")
    resources = []
    for number, entry in enumerate(entries, start=1):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            raise FhirError(f"entry {number} has no resource")
        if resource.get("resourceType") == "Patient":
            resources.append(resource)
    return resources


def _nhs_number(resource: Mapping[str, Any]) -> str:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, Mapping) and identifier.get("system") == NHS_NUMBER_SYSTEM:
            return str(identifier.get("value") or "").strip()
    # PDS puts the NHS number in `id` too; a hand-written Bundle may only have that.
    if isinstance(resource.get("id"), str):
        return str(resource["id"]).strip()
    raise FhirError("Patient has no NHS number identifier")


def _birth_date(value: Any) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FhirError("Patient.birthDate is not a string")
    if len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise FhirError("Patient.birthDate is not a date") from None


def _family_name(resource: Mapping[str, Any]) -> str:
    names = [n for n in resource.get("name") or [] if isinstance(n, Mapping) and not _ended(n)]
    for use in _NAME_USES:
        for name in names:
            if name.get("use") == use and isinstance(name.get("family"), str) and name["family"].strip():
                return str(name["family"]).strip()
    raise FhirError("Patient has no current family name")


def _gp_ods_code(resource: Mapping[str, Any]) -> str:
    practitioners = resource.get("generalPractitioner") or []
    if not isinstance(practitioners, list):
        raise FhirError("Patient.generalPractitioner is not a list")
    for reference in practitioners:
        identifier = reference.get("identifier") if isinstance(reference, Mapping) else None
        if not isinstance(identifier, Mapping) or identifier.get("system", ODS_SYSTEM) != ODS_SYSTEM:
            continue
        if not _ended(identifier) and str(identifier.get("value") or "").strip():
            return str(identifier["value"]).strip().upper()
    return ""


def _ended(element: Mapping[str, Any]) -> bool:
    """A name or registration whose period has an end is historical: PDS closes a period when it is replaced."""
    period = element.get("period")
    return isinstance(period, Mapping) and bool(period.get("end"))
