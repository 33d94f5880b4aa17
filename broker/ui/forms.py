"""The send form: its fields, their checks, the MESH headers they become, and MESH refusals as field errors.

The headers are checked by broker.headers.parse_send, exactly as an API send's are; only what the API has no
notion of (the patient fields that make a GPPROVIDER address, the list of workflows offered) is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker import headers, nhs
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.models import Workflow
from broker.ui.pages import FieldError

#: The form's text fields in page order (the file comes last, so that these arrive before it).
TEXT_FIELDS = ("to", "nhs_number", "dob_day", "dob_month", "dob_year", "surname", "workflow_id", "subject", "local_id")
#: What a text field may hold at most, in bytes (the longest MESH header, mex-Subject, takes 500 characters).
FIELD_BYTES = 2000
#: Where each send header's problem is shown.
HEADER_FIELDS = {
    headers.TO.lower(): "to",
    headers.WORKFLOW_ID.lower(): "workflow_id",
    headers.SUBJECT.lower(): "subject",
    headers.LOCAL_ID.lower(): "local_id",
    headers.FILE_NAME.lower(): "file",
}


def offered_workflows(workflows: list[Workflow], mailbox_id: str) -> list[str]:
    """The workflows the send page offers a mailbox: those it is registered to send, and those open to anyone
    (unrestricted, with no senders registered: the GP workflows, which list only receivers, among them). Whether a
    send is allowed stays the messaging service's decision."""
    return [w.workflow_id for w in workflows if mailbox_id in w.senders or (not w.restricted and not w.senders)]


@dataclass
class SendForm:
    values: dict[str, str] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.values.get(name, "").strip()

    def recipient(self) -> str:
        """A mailbox ID, or the GPPROVIDER address the patient fields make; errors added for what is missing."""
        to = self.get("to").upper()
        patient = [self.get(name) for name in ("nhs_number", "dob_day", "dob_month", "dob_year", "surname")]
        if to and any(patient):
            self.errors.append(FieldError("to", "Enter a mailbox ID or the patient's details, not both"))
            return ""
        if to:
            return to
        if not any(patient):
            self.errors.append(FieldError("to", "Enter the mailbox ID to send to, or the patient's details"))
            return ""
        return self._gp_address()

    def _gp_address(self) -> str:
        number = self.get("nhs_number").replace(" ", "")
        if not nhs.is_valid_nhs_number(number):
            self.errors.append(FieldError("nhs_number", "Enter a valid 10-digit NHS number"))
        day, month, year = (self.get(name) for name in ("dob_day", "dob_month", "dob_year"))
        born = None
        if day.isdigit() and month.isdigit() and year.isdigit() and len(year) == 4:
            born = nhs.parse_date_of_birth(f"{int(year):04d}{int(month):02d}{int(day):02d}")
        if born is None:
            self.errors.append(FieldError("dob_day", "Enter the patient's date of birth as a real date"))
        surname = self.get("surname")
        if not surname:
            self.errors.append(FieldError("surname", "Enter the patient's surname"))
        if born is None or not surname:
            return ""
        return f"{nhs.GP_PREFIX}{number}_{born:%Y%m%d}_{surname}"

    def workflow(self, offered: list[str]) -> str:
        chosen = self.get("workflow_id")
        if not chosen:
            self.errors.append(FieldError("workflow_id", "Choose a workflow"))
        elif chosen not in offered:
            self.errors.append(FieldError("workflow_id", "Choose one of the workflows your mailbox may send"))
        return chosen

    def send_headers(self, recipient: str, workflow_id: str, file_name: str, content_type: str) -> dict[str, str]:
        return {
            headers.TO: recipient,
            headers.WORKFLOW_ID: workflow_id,
            headers.SUBJECT: self.get("subject"),
            headers.LOCAL_ID: self.get("local_id"),
            headers.FILE_NAME: file_name,
            headers.CONTENT_TYPE: content_type,
        }


def refusal_errors(error: BrokerError | ValidationFailed, recipient: str) -> list[FieldError] | None:
    """A MESH refusal as errors against the fields a person can change; None for one that is not about them."""
    if isinstance(error, ValidationFailed):
        found = []
        for problem in error.problems:
            name = HEADER_FIELDS.get(problem.loc[-1], "to")
            found.append(FieldError(name, f"{_LABELS.get(name, name)}: {problem.msg.lower()}"))
        return found
    patient = nhs.is_gp_address(recipient)
    to_field = "nhs_number" if patient else "to"
    texts = {
        ErrorCode.UNREGISTERED_TO: (to_field, f"There is no active mailbox with the ID {recipient}"),
        ErrorCode.WORKFLOW_NOT_REGISTERED: ("to", "That mailbox does not receive this workflow"),
        ErrorCode.SENDER_NOT_ALLOWED: ("workflow_id", "Your mailbox may not send this workflow"),
        ErrorCode.PATIENT_ADDRESSING_NOT_ALLOWED: ("workflow_id", "This workflow cannot be sent to a patient's GP"),
        ErrorCode.DATA_FILE_MISSING: ("file", "The selected file is empty"),
        ErrorCode.DEMOGRAPHICS_UNAVAILABLE: (
            "nhs_number",
            "The patient directory is not available at the moment. Try again in a few minutes",
        ),
        ErrorCode.MALFORMED_CONTROL: ("to", "Enter a mailbox ID, not a web address, and no line breaks in any field"),
    }
    if error.code is ErrorCode.UNREGISTERED_TO and patient:
        return [FieldError("nhs_number", "No mailbox receives this workflow for the patient's GP practice")]
    found_text = texts.get(error.code)
    return None if found_text is None else [FieldError(*found_text)]


_LABELS = {
    "to": "To",
    "workflow_id": "Workflow ID",
    "subject": "Subject",
    "local_id": "Local reference",
    "file": "File",
}
