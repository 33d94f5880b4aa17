"""A local stand-in for PDS FHIR R4: GET /Patient/{nhs_number} answers Patient JSON, 404 or scripted faults."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiohttp import web

from broker.demographics.fhir import NHS_NUMBER_SYSTEM, ODS_SYSTEM
from broker.models import Patient


def pds_patient(patient: Patient) -> dict[str, Any]:
    """A Patient resource shaped like PDS's retrieve answer (trimmed to what routing reads, plus some noise)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient.nhs_number,
        "identifier": [
            {
                "system": NHS_NUMBER_SYSTEM,
                "value": patient.nhs_number,
                "extension": [
                    {"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"}
                ],
            }
        ],
        "meta": {"versionId": "2", "security": [{"code": "U", "display": "unrestricted"}]},
        "name": [
            {
                "id": "123",
                "use": "usual",
                "period": {"start": "2020-01-01"},
                "given": ["Jane"],
                "family": patient.family_name,
            }
        ],
        "gender": "female",
        "birthDate": patient.date_of_birth.isoformat() if isinstance(patient.date_of_birth, date) else None,
    }
    if patient.gp_ods_code:
        resource["generalPractitioner"] = [
            {
                "id": "254406A3",
                "type": "Organization",
                "identifier": {"system": ODS_SYSTEM, "value": patient.gp_ods_code, "period": {"start": "2020-01-01"}},
            }
        ]
    return resource


@dataclass
class FakePds:
    """Serves `patients`; `faults` is consumed one per request first: an HTTP status, "slow" or "garbage"."""

    patients: dict[str, Patient] = field(default_factory=dict)
    faults: deque[int | str] = field(default_factory=deque)
    slow_seconds: float = 2.0
    requests: list[web.Request] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/FHIR/R4/Patient/{nhs_number}", self.retrieve)
        return app

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        fault = self.faults.popleft() if self.faults else None
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        elif fault == "garbage":
            return web.Response(body=b'{"resourceType": "Patient", "name": [', content_type="application/fhir+json")
        elif isinstance(fault, int):
            return web.json_response({"resourceType": "OperationOutcome"}, status=fault)
        patient = self.patients.get(request.match_info["nhs_number"])
        if patient is None:
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
            return web.json_response(outcome, status=404, content_type="application/fhir+json")
        return web.json_response(pds_patient(patient), content_type="application/fhir+json")
