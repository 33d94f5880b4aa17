"""Workflow filters as SQL values, shared by the stores: LIKE patterns with the value's own wildcards escaped."""

from __future__ import annotations

from broker.store.protocol import FilterOp, WorkflowFilter


def like_pattern(workflow_filter: WorkflowFilter) -> str:
    """The value for `workflow_id = ?` (EQUALS) or `workflow_id LIKE ? ESCAPE '\\'` (the other forms)."""
    if workflow_filter.op is FilterOp.EQUALS:
        return workflow_filter.value
    escaped = workflow_filter.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if workflow_filter.op is FilterOp.STARTS_WITH else f"%{escaped}%"
