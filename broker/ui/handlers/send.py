"""Sending a file: the form, and its upload streamed into the messaging service within the page's size limit."""

from __future__ import annotations

from aiohttp import BodyPartReader, MultipartReader, web

from broker import headers
from broker.errors import BrokerError, ValidationFailed
from broker.models import Mailbox
from broker.store.protocol import WebSession
from broker.ui import forms, pages, uploads, wording
from broker.ui.config import FORM_OVERHEAD_BYTES
from broker.ui.keys import CLOSE, CONFIG, DIRECTORY, MESSAGING, UI_METRICS
from broker.ui.pages import FieldError

#: The longest file name MESH keeps (mex-FileName).
MAX_FILE_NAME = headers.MAX_LENGTHS[headers.FILE_NAME]
UNREADABLE = FieldError("to", "The form could not be read. Reload the page and send it again")


async def page(request: web.Request) -> web.StreamResponse:
    _session, mailbox = await pages.signed_in(request)
    return await _form(request, mailbox, forms.SendForm())


async def send(request: web.Request) -> web.StreamResponse:
    """Read the fields, check them, then stream the file into Messaging.send. Whatever is refused, the rest of
    the upload is read and dropped before the answer, which a browser would otherwise show as a network error."""
    session, mailbox = await pages.signed_in(request)
    limit = request.app[CONFIG].upload_limit(pages.address(request))
    form = forms.SendForm()
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD_BYTES:
        return await _too_large(request, mailbox, form, limit)
    try:
        file_part = await _fields(await request.multipart(), session, form)
    except pages.Refused:
        await _drain(request)
        raise
    except (uploads.FieldTooLong, ValueError, AssertionError):
        # Not a form this page made (a field too long, broken multipart framing).
        return await _refuse(request, mailbox, form, [UNREADABLE])
    offered = await _offered(request, mailbox)
    recipient = form.recipient()
    workflow_id = form.workflow(offered)
    file_name = _file_name(file_part)
    if file_part is None or not file_name:
        form.errors.append(FieldError("file", "Choose a file to send"))
    if form.errors or file_part is None:
        return await _refuse(request, mailbox, form, form.errors, offered=offered, chosen=bool(file_name))
    content_type = file_part.headers.get("Content-Type") or "application/octet-stream"
    try:
        send_request = headers.parse_send(form.send_headers(recipient, workflow_id, file_name, content_type))
        message_id = await request.app[MESSAGING].send(mailbox, send_request, uploads.limited(file_part, limit))
    except uploads.UploadTooLarge:
        return await _too_large(request, mailbox, form, limit)
    except (BrokerError, ValidationFailed) as exc:
        errors = forms.refusal_errors(exc, recipient)
        if errors is None:
            await _drain(request)
            raise
        return await _refuse(request, mailbox, form, errors, offered=offered, chosen=True)
    await _drain(request)
    request.app[UI_METRICS].uploads.labels("sent").inc()
    pages.log_extra(request, message_id=message_id, workflow_id=workflow_id)
    raise web.HTTPSeeOther(f"{pages.PREFIX}/sent?sent={message_id}")


async def _fields(reader: MultipartReader, session: WebSession, form: forms.SendForm) -> BodyPartReader | None:
    """Check the CSRF token (the first field, where the page puts it), then read the text fields up to the file."""
    part = await reader.next()
    given = None
    if isinstance(part, BodyPartReader) and part.name == pages.CSRF_FIELD:
        given = await uploads.read_text(part, forms.FIELD_BYTES)
    pages.check_csrf(session.csrf_token, given)
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("nested multipart")
        if part.name == "file":
            return part
        if part.name in forms.TEXT_FIELDS:
            form.values[part.name] = await uploads.read_text(part, forms.FIELD_BYTES)
        else:
            await part.release()
    return None


def _file_name(part: BodyPartReader | None) -> str:
    """The file's own name: without any folder an old browser sends, without control characters, within MESH's
    limit (shortened before its extension)."""
    if part is None or not part.filename:
        return ""
    name = part.filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    if len(name) > MAX_FILE_NAME:
        _stem, dot, extension = name.rpartition(".")
        keep = extension if dot and len(extension) < 20 else ""
        name = name[: MAX_FILE_NAME - len(keep) - 1] + ("." + keep if keep else "")
    return name


async def _offered(request: web.Request, mailbox: Mailbox) -> list[str]:
    return forms.offered_workflows(await request.app[DIRECTORY].list_workflows(), mailbox.mailbox_id)


async def _drain(request: web.Request) -> None:
    """Read and drop the rest of the upload. Past the bound, the answer goes out and the connection is closed
    behind it (the browser will show a network error: the page's script checks the size before that happens)."""
    if not await uploads.discard_rest(request, request.app[CONFIG].discard_limit_bytes):
        request[CLOSE] = True
        raise pages.Refused(413, "The file is too large", "Nothing was sent. Choose a smaller file.")


async def _too_large(request: web.Request, mailbox: Mailbox, form: forms.SendForm, limit: int) -> web.StreamResponse:
    request.app[UI_METRICS].uploads.labels("too_large").inc()
    pages.log_extra(request, outcome="too_large")
    error = FieldError("file", f"The selected file must be smaller than {wording.size_text(limit)}")
    return await _form(request, mailbox, form, errors=[error], status=413, drain=True)


async def _refuse(
    request: web.Request,
    mailbox: Mailbox,
    form: forms.SendForm,
    errors: list[FieldError],
    *,
    offered: list[str] | None = None,
    chosen: bool = False,
) -> web.StreamResponse:
    request.app[UI_METRICS].uploads.labels("refused").inc()
    pages.log_extra(request, outcome="refused")
    if chosen and not any(e.field == "file" for e in errors):
        # A browser never fills a file field in again: say so where the file goes.
        errors = [*errors, FieldError("file", "Choose the file again")]
    return await _form(request, mailbox, form, errors=errors, status=400, drain=True, offered=offered)


async def _form(
    request: web.Request,
    mailbox: Mailbox,
    form: forms.SendForm,
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
    drain: bool = False,
    offered: list[str] | None = None,
) -> web.StreamResponse:
    if drain:
        await _drain(request)
    limit = request.app[CONFIG].upload_limit(pages.address(request))
    context = {
        "title": "Send a file",
        "nav": "send",
        "form": form.values,
        "errors": errors or [],
        "workflows": offered if offered is not None else await _offered(request, mailbox),
        "limit": limit,
        "limit_text": wording.size_text(limit),
    }
    return pages.render(request, "send.html", context, status=status)
