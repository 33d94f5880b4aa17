"""Hears of inbox arrivals at every node on PostgreSQL, for the long-poll inbox (`GET .../inbox?wait=N`).

Migration 0008's triggers NOTIFY mesh_inbox with the recipient whenever a message becomes accepted (a send, a
last chunk, a report), whichever node committed it. A node LISTENs on a connection of its own (as the directory
cache does, broker/store/pg_directory.py) and hands each recipient to broker/arrivals.py, which wakes the requests
waiting on that mailbox. While the connection is down, `listening` is False and waiters poll the store instead.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.store.pg_listener import RETRY_SECONDS, ChannelListener

CHANNEL = "mesh_inbox"
APPLICATION_NAME = "mesh-broker arrivals listener"


def listen_for_arrivals(
    dsn: str, on_arrival: Callable[[str], None], *, retry_seconds: tuple[float, ...] = RETRY_SECONDS
) -> ChannelListener:
    """Hand each notified recipient to on_arrival; while not listening, waiters poll the store instead."""
    return ChannelListener(
        dsn,
        CHANNEL,
        application_name=APPLICATION_NAME,
        name="arrivals",
        down="long polls fall back to polling",
        on_notify=on_arrival,
        retry_seconds=retry_seconds,
    )
