"""Words a person understands for what the API says in codes: reports, statuses, sizes, times."""

from __future__ import annotations

from datetime import datetime

from broker.models import Message, MessageType, Status
from broker.services.reports import NDR_DEACTIVATED

#: Why a message was not delivered, by its MESH error code (mesh-api.md section 6; GP routing's EPL codes).
REASONS = {
    "14": "The recipient did not download it within 5 days.",
    "EPL-150": "More than one GP practice mailbox matched the patient on this workflow, so it was not sent.",
    "EPL-151": "No GP practice mailbox was found for the patient on this workflow.",
    "EPL-152": "The NHS number is not valid.",
    "EPL-153": "No patient with this NHS number was found.",
    "EPL-154": "The date of birth or surname does not match the patient's record.",
}


def reason(code: str, description: str) -> str:
    """Why something went wrong, in words; the service's own description when the code has none here."""
    if code == "14" and description == NDR_DEACTIVATED:
        return "The recipient's mailbox was closed before it was downloaded."
    return REASONS.get(code) or description or "No reason was given."


def report_summary(message: Message) -> str:
    """What a REPORT in the inbox says: which message it is about and what happened to it."""
    event = message.error_event
    about = f" {message.linked_message_id}" if message.linked_message_id else ""
    if event is None:
        return f"A report from MESH{about}."
    return f"Your message{about} was not delivered. {reason(event.code, event.description)}"


def is_report(message: Message) -> bool:
    return message.message_type is MessageType.REPORT


def tracking(message: Message) -> str:
    """A sent message's state, for its sender."""
    if message.status is Status.ACCEPTED:
        return "Delivered: waiting to be downloaded"
    if message.status is Status.ACKNOWLEDGED:
        when = f" on {when_text(message.acknowledged_at)}" if message.acknowledged_at else ""
        return f"Acknowledged{when}"
    if message.status is Status.UPLOADING:
        return "Still being uploaded"
    event = message.error_event
    why = reason(event.code, event.description) if event is not None else "No reason was given."
    return f"Not delivered: {why}"


def size_text(size: int) -> str:
    """1 KB is 1,000 bytes, as the limits are stated (50 MB is 50,000,000 bytes)."""
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value >= 100 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"  # pragma: no cover - every size >= 1000 matched above


def when_text(at: datetime | None) -> str:
    """A time as GOV.UK writes one, in UTC: 30 November 2026, 9:05am (UTC)."""
    if at is None:
        return ""
    hour = at.hour % 12 or 12
    return f"{at.day} {at.strftime('%B %Y')}, {hour}:{at.minute:02d}{'am' if at.hour < 12 else 'pm'} (UTC)"
