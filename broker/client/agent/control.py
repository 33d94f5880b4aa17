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

    def elements(self) -> list[tuple[str, str]]:
        """The record's child elements, in the order they are written."""
        return [
            ("DateTime", self.at.astimezone(UTC).strftime("%Y%m%d%H%M%S")),
            ("Event", self.event),
            ("Status", self.status),
            ("StatusCode", self.code),
            ("Description", self.description),
        ]


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
        """The document ElementTree would write (indented, empty elements as `<Name />`), written directly: the
        agent writes one per file it sends or receives, and building the tree cost more than the rest of that."""
        names = [n for n in ORDER if n in self.fields] + [n for n in self.fields if n not in ORDER]
        if any(name.startswith("{") for name in names):  # a namespaced element: ElementTree picks its prefixes
            return self._tree_xml(names)
        lines = ['<?xml version="1.0" encoding="UTF-8"?>']
        if not names and not self.records:
            lines.append("<DTSControl />")
        else:
            lines.append("<DTSControl>")
            lines.extend(_element("  ", name, self.fields[name]) for name in names)
            for record in self.records:
                lines.append("  <StatusRecord>")
                for name, text in record.elements():
                    lines.append(_element("    ", name, text))
                lines.append("  </StatusRecord>")
            lines.append("</DTSControl>")
        lines.append("")
        return "\n".join(lines).encode()

    def _tree_xml(self, names: list[str]) -> bytes:
        root = ET.Element("DTSControl")
        for name in names:
            ET.SubElement(root, name).text = self.fields[name]
        for record in self.records:
            element = ET.SubElement(root, "StatusRecord")
            for name, text in record.elements():
                ET.SubElement(element, name).text = text
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


def _element(indent: str, name: str, text: str) -> str:
    """One leaf element as ElementTree writes it: only &, < and > escaped in text, `<Name />` when empty."""
    if not text:
        return f"{indent}<{name} />"
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{indent}<{name}>{escaped}</{name}>"


def _parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)
