"""The Java MESH Client's control file (`.ctl`, root `DTSControl`, mesh-ecosystem.md section 2.3): read and write."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: The order the Java client writes fields in (its documented template first).
ORDER = (
    "Version",
    "AddressType",
    "MessageType",
    "WorkflowId",
    "From_DTS",
    "To_DTS",
    "From_ESMTP",
    "To_ESMTP",
    "Subject",
    "LocalId",
    "DTSId",
    "PartnerId",
    "Compress",
    "Encrypted",
    "IsCompressed",
    "DataChecksum",
    "ProcessId",
    "AllowChunking",
)


class ControlError(ValueError):
    """The control file cannot be sent as it is; the message says why (it goes into the FAILED StatusRecord)."""


@dataclass(frozen=True)
class StatusRecord:
    event: str
    status: str
    code: str
    description: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Control:
    """A control file's fields by element name, and its status records."""

    fields: dict[str, str]
    records: list[StatusRecord] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.fields.get(name, "").strip()

    def flag(self, name: str) -> bool:
        return self.get(name).upper() in ("Y", "YES", "TRUE", "1")

    def with_fields(self, **values: str) -> Control:
        return Control({**self.fields, **values}, list(self.records))

    def with_record(self, record: StatusRecord) -> Control:
        return Control(dict(self.fields), [*self.records, record])

    def to_xml(self) -> bytes:
        root = ET.Element("DTSControl")
        names = [n for n in ORDER if n in self.fields] + [n for n in self.fields if n not in ORDER]
        for name in names:
            ET.SubElement(root, name).text = self.fields[name]
        for record in self.records:
            element = ET.SubElement(root, "StatusRecord")
            ET.SubElement(element, "DateTime").text = record.at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
            ET.SubElement(element, "Event").text = record.event
            ET.SubElement(element, "Status").text = record.status
            ET.SubElement(element, "StatusCode").text = record.code
            ET.SubElement(element, "Description").text = record.description
        ET.indent(root)
        body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


def parse(data: bytes) -> Control:
    """A DTSControl document; ControlError when it is not one (not XML, another root element)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ControlError(f"the control file is not well-formed XML ({exc})") from None
    if root.tag != "DTSControl":
        raise ControlError(f"the control file's root element is <{root.tag}>, not <DTSControl>")
    fields: dict[str, str] = {}
    records = []
    for child in root:
        if child.tag == "StatusRecord":
            values = {c.tag: (c.text or "").strip() for c in child}
            records.append(
                StatusRecord(
                    values.get("Event", ""),
                    values.get("Status", ""),
                    values.get("StatusCode", ""),
                    values.get("Description", ""),
                    _parse_time(values.get("DateTime", "")),
                )
            )
        elif len(child) == 0:
            fields[child.tag] = (child.text or "").strip()
    return Control(fields, records)


def check_outbound(control: Control) -> None:
    """What a send needs: a recipient and a workflow, and a Data message."""
    missing = [name for name in ("To_DTS", "WorkflowId") if not control.get(name)]
    if missing:
        raise ControlError(f"the control file has no {' and no '.join(missing)}")
    message_type = control.get("MessageType") or "Data"
    if message_type.upper() != "DATA":
        raise ControlError(f"MessageType is {message_type!r}: only Data messages can be sent")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)
