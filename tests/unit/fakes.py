"""An in-memory stand-in for the few MetadataStore methods the directory and auth services call."""

from __future__ import annotations

from datetime import datetime

from broker.models import Mailbox, Workflow


class FakeStore:
    def __init__(self, *mailboxes: Mailbox) -> None:
        self.mailboxes = {m.mailbox_id: m for m in mailboxes}
        self.workflows: dict[str, Workflow] = {}
        self.tokens: dict[str, datetime] = {}

    async def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        return self.mailboxes.get(mailbox_id)

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        self.mailboxes[mailbox.mailbox_id] = mailbox

    async def count_mailboxes(self) -> int:
        return len(self.mailboxes)

    async def put_workflow(self, workflow: Workflow) -> None:
        self.workflows[workflow.workflow_id] = workflow

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        return self.workflows.get(workflow_id)

    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        if token_key in self.tokens:
            return False
        self.tokens[token_key] = expires_at
        return True
