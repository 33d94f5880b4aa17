"""The paged lists' SQL, built once for both stores: its WHERE clause depends on whether a cursor and a workflow
filter are given, so it is assembled here rather than named four ways in the .sql files. Placeholders are `?`
(queries.placeholders numbers them for PostgreSQL). Each page asks for one row more than it shows, so the store
knows whether to hand back a cursor."""

from __future__ import annotations

import functools

from broker.store.protocol import Box, FilterOp, WorkflowFilter


@functools.cache
def inbox_page(with_cursor: bool, workflow_filter: tuple[FilterOp, bool] | None) -> str:
    """Accepted messages of a recipient in delivery order: params recipient, [delivered_at, message_id],
    [filter value], limit. `workflow_filter` is (op, negate): only its shape matters to the SQL."""
    sql = ["SELECT delivered_at, message_id FROM messages WHERE recipient = ? AND status = 'accepted'"]
    if with_cursor:
        sql.append("AND (delivered_at, message_id) > (?, ?)")
    if workflow_filter is not None:
        op, negate = workflow_filter
        if op is FilterOp.EQUALS:
            sql.append(f"AND workflow_id {'<>' if negate else '='} ?")
        else:
            sql.append(f"AND workflow_id {'NOT LIKE' if negate else 'LIKE'} ? ESCAPE '\\'")
    sql.append("ORDER BY delivered_at, message_id LIMIT ?")
    return " ".join(sql)


@functools.cache
def rich_page(box: Box, with_cursor: bool) -> str:
    """The rich lists, newest first: params mailbox, since, [created_at, message_id], limit. INBOX is every
    message to the mailbox except those still uploading; OUTBOX every message from it."""
    if box is Box.INBOX:
        sql = ["SELECT created_at, message_id FROM messages WHERE recipient = ? AND status <> 'uploading'"]
    else:
        sql = ["SELECT created_at, message_id FROM messages WHERE sender = ?"]
    sql.append("AND created_at >= ?")
    if with_cursor:
        sql.append("AND (created_at, message_id) < (?, ?)")
    sql.append("ORDER BY created_at DESC, message_id DESC LIMIT ?")
    return " ".join(sql)


def like_pattern(workflow_filter: WorkflowFilter) -> str:
    """The filter's value for `workflow_id = ?` (EQUALS) or `LIKE ? ESCAPE '\\'` (the other forms), with the
    value's own wildcards escaped."""
    if workflow_filter.op is FilterOp.EQUALS:
        return workflow_filter.value
    escaped = workflow_filter.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if workflow_filter.op is FilterOp.STARTS_WITH else f"%{escaped}%"
