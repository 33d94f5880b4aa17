"""The GP routing rule: a GPPROVIDER address is traced, then its practice's ODS code is looked up by workflow.

`mex-To: GPPROVIDER_<NHS number>_<date of birth>_<surname>` (mesh-ecosystem.md section 4): the NHS number
is checked, the demographics directory must know it, the date of birth and surname must match, the registered
practice's ODS code plus the workflow must give exactly one receiving mailbox. Failures are EPL-150..154
outcomes, which the caller turns into a REPORT for the sender; only an unavailable directory is an error now.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import nhs
from broker.demographics.protocol import Demographics, DemographicsUnavailable
from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.store.protocol import DirectoryStore


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """Why a GPPROVIDER address leads to no mailbox: an EPL code and a description free of patient data."""

    code: ErrorCode
    description: str = ""

    @property
    def text(self) -> str:
        return self.description or self.code.spec.description


class GpRouting:
    def __init__(self, store: DirectoryStore, demographics: Demographics):
        self._store = store
        self._demographics = demographics

    async def check_allowed(self, sender: str, workflow_id: str) -> None:
        """Raise 417 unless the workflow accepts patient addressing and (if restricted) this sender."""
        workflow = await self._store.get_workflow(workflow_id)
        if workflow is None or not workflow.patient_addressing:
            raise BrokerError(ErrorCode.PATIENT_ADDRESSING_NOT_ALLOWED)
        if workflow.restricted and sender not in workflow.senders:
            raise BrokerError(ErrorCode.SENDER_NOT_ALLOWED)

    async def resolve(self, recipient: str, workflow_id: str) -> Mailbox | RouteFailure:
        """The one mailbox this address reaches on this workflow, or the EPL outcome that says why not.

        Raises BrokerError 503 when the demographics source cannot answer, so nothing is accepted on a route
        that might resolve a moment later.
        """
        address = nhs.parse_gp_address(recipient)
        if address is None:
            return RouteFailure(
                ErrorCode.EPL_NO_MATCH, "Address must be GPPROVIDER_<NHS number>_<date of birth>_<surname>"
            )
        if not nhs.is_valid_nhs_number(address.nhs_number):
            return RouteFailure(ErrorCode.EPL_INVALID_NHS_NUMBER)
        born = nhs.parse_date_of_birth(address.date_of_birth)
        if born is None:
            return RouteFailure(ErrorCode.EPL_NO_MATCH, "Date of birth is not a date in YYYYMMDD form")
        try:
            patient = await self._demographics.lookup(address.nhs_number)
        except DemographicsUnavailable as exc:
            raise BrokerError(ErrorCode.DEMOGRAPHICS_UNAVAILABLE) from exc
        if patient is None:
            return RouteFailure(ErrorCode.EPL_NOT_FOUND)
        if patient.date_of_birth != born or not nhs.surnames_match(address.surname, patient.family_name):
            return RouteFailure(ErrorCode.EPL_NO_MATCH)
        if not patient.gp_ods_code:
            return RouteFailure(ErrorCode.EPL_NO_MAILBOX, "No registered GP practice")
        mailboxes = await self._store.receivers(workflow_id, patient.gp_ods_code)
        if not mailboxes:
            return RouteFailure(ErrorCode.EPL_NO_MAILBOX)
        if len(mailboxes) > 1:
            return RouteFailure(ErrorCode.EPL_MANY_MAILBOXES)
        return mailboxes[0]
