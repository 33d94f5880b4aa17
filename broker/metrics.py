"""Prometheus metrics on a per-app registry; routes are labelled by template, workflows by a bounded set."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

import broker
from broker.errors import BrokerError, ValidationFailed

#: Request latency buckets from 1 ms to 10 s: the KPIs sit at 0.2 s (median) and 1 s (p99).
#: A housekeeping pass is milliseconds when idle, seconds when it expires or purges a backlog.
HOUSEKEEPING_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Chunk transfers take longer: up to 100 MB each.
TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OTHER = "other"
#: The code label of a request refused for a missing or malformed field (400, the sandbox's "detail" shape).
VALIDATION = "validation"


def error_code_label(error: BrokerError) -> str:
    """The MESH code ("06", "EPL-151", ...), or the error's name for the few without one."""
    return error.code.spec.code or error.code.name


class BoundedLabels:
    """Admits the first `limit` distinct values of a label and folds the rest into "other", so a sender
    inventing workflow IDs cannot grow the registry without bound."""

    def __init__(self, limit: int):
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER

    def known(self, value: str) -> str:
        """The value if already admitted, else "other", admitting nothing: for requests that were refused, so
        refused junk cannot take the places of real workflows."""
        return value if value in self._seen else OTHER


class Metrics:
    """Every metric the broker exports. One instance per app, so tests and several apps never collide."""

    def __init__(self, *, workflow_label_limit: int = 50):
        self.registry = CollectorRegistry(auto_describe=True)
        self.workflow = BoundedLabels(workflow_label_limit)
        r = self.registry
        self.request_duration = Histogram(
            "mesh_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class (2xx..5xx, or client_closed: the "
            "client went away, or stalled and was cut off or answered 408, before its answer was complete).",
            ("route", "method", "status_class"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        #: request_duration's children by label values: labels() builds and checks the key under a lock each call.
        self._request_durations: dict[tuple[str, str, str], Histogram] = {}
        self.requests_in_flight = Gauge("mesh_http_requests_in_flight", "Requests being handled now.", registry=r)
        self.transfer_memory_in_use = Gauge(
            "mesh_transfer_memory_in_use_bytes",
            "Bytes of the node's transfer memory budget (MESH_TRANSFER_MEMORY_BYTES) held by transfers moving bytes.",
            registry=r,
        )
        self.transfer_memory_budget = Gauge(
            "mesh_transfer_memory_budget_bytes",
            "The node's transfer memory budget (MESH_TRANSFER_MEMORY_BYTES).",
            registry=r,
        )
        self.connections_open = Gauge(
            "mesh_connections_open", "Client connections open on the MESH port (counted by `serve`).", registry=r
        )
        self.connections_refused = Counter(
            "mesh_connections_refused_total",
            "Connections answered 503 and closed at once, by the limit they passed (node: MESH_MAX_CONNECTIONS; "
            "address: MESH_MAX_CONNECTIONS_PER_ADDRESS).",
            ("limit",),
            registry=r,
        )
        self.rate_limited = Counter(
            "mesh_rate_limited_total",
            "Requests answered 429 by a per-mailbox limit (requests: MESH_RATE_LIMIT_PER_SECOND; transfers: "
            "MESH_MAX_TRANSFERS_PER_MAILBOX).",
            ("limit",),
            registry=r,
        )
        self.transfers_cut = Counter(
            "mesh_transfers_timed_out_total",
            "Uploads answered 408 and downloads cut off because the client stalled (idle: no byte for "
            "MESH_BODY_IDLE_TIMEOUT_SECONDS) or was too slow (total: past the floor plus the per-MB allowance).",
            ("direction", "reason"),
            registry=r,
        )
        self.bad_http_requests = Counter(
            "mesh_bad_http_requests_total",
            "Connections whose bytes were not an HTTP request aiohttp could parse (a port scan, TLS to a plain-HTTP "
            "port, garbage), answered 400 and closed before any route, by the parser's error.",
            ("reason",),
            registry=r,
        )
        for limit in ("node", "address"):
            self.connections_refused.labels(limit)
        for limit in ("requests", "transfers"):
            self.rate_limited.labels(limit)
        for direction in ("upload", "download"):
            for reason in ("idle", "total"):
                self.transfers_cut.labels(direction, reason)
        self.messages_sent = Counter(
            "mesh_messages_sent_total", "Messages accepted from senders (chunk 1 stored).", ("workflow",), registry=r
        )
        self.messages_delivered = Counter(
            "mesh_messages_delivered_total",
            "Messages placed in a recipient's inbox (every chunk stored).",
            ("workflow",),
            registry=r,
        )
        self.messages_acknowledged = Counter(
            "mesh_messages_acknowledged_total", "Messages acknowledged by recipients.", ("workflow",), registry=r
        )
        self.messages_rejected = Counter(
            "mesh_messages_rejected_total",
            "Sends refused after authentication (POST /outbox answered with a MESH error), by workflow and MESH "
            "error code; a workflow no accepted message has carried yet counts as other.",
            ("workflow", "code"),
            registry=r,
        )
        self.errors = Counter(
            "mesh_errors_total",
            "MESH error responses by HTTP status and MESH code (auth failures included).",
            ("status", "code"),
            registry=r,
        )
        self.auth_failures = Counter(
            "mesh_auth_failures_total", "Rejected NHSMESH tokens by reason.", ("reason",), registry=r
        )
        self.bytes_received = Counter("mesh_bytes_received_total", "Message bytes stored from senders.", registry=r)
        self.bytes_sent = Counter("mesh_bytes_sent_total", "Message bytes sent to recipients.", registry=r)
        self.chunks_stored = Counter(
            "mesh_chunks_stored_total",
            "Chunks accepted, by where their bytes went: inline (in the metadata row) or blob (the blob store).",
            ("store",),
            registry=r,
        )
        self.chunk_upload_duration = Histogram(
            "mesh_chunk_upload_duration_seconds",
            "Time to take in one chunk's body and store it (inline or in the blob store).",
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.chunk_download_duration = Histogram(
            "mesh_chunk_download_duration_seconds",
            "Time to stream one chunk to a recipient.",
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.chunks_corrupt = Counter(
            "mesh_chunks_corrupt_total", "Downloads cut short because stored bytes failed verification.", registry=r
        )
        self.downloads_aborted = Counter(
            "mesh_downloads_aborted_total",
            "Downloads the broker cut short after their headers were sent, by cause: blob_store (it failed past its "
            "retries), missing (no blob under the row), corrupt (stored bytes failed verification), not_gzip "
            "(stored as gzip but not gzip).",
            ("reason",),
            registry=r,
        )
        for reason in ("blob_store", "missing", "corrupt", "not_gzip"):
            self.downloads_aborted.labels(reason)
        self.blob_operation_duration = Histogram(
            "mesh_blob_operation_duration_seconds",
            "Blob store operations (a get spans the whole streamed read).",
            ("operation", "backend"),
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.messages_undeliverable = Counter(
            "mesh_messages_expired_total",
            "Accepted messages made undeliverable, each with a non-delivery REPORT to its sender, by reason "
            "(expired: not acknowledged within the inbox expiry; deactivated: the recipient mailbox was deactivated).",
            ("workflow", "reason"),
            registry=r,
        )
        self.uploads_abandoned = Counter(
            "mesh_uploads_abandoned_total",
            "Chunked uploads failed for missing chunks after the upload timeout.",
            registry=r,
        )
        self.messages_purged = Counter(
            "mesh_messages_purged_total",
            "Messages whose rows and bytes were deleted after the retention period.",
            registry=r,
        )
        self.orphan_blobs_deleted = Counter(
            "mesh_orphan_blobs_deleted_total",
            "Blobs deleted with no row pointing at them, by reason (released: queued when their row changed or "
            "went; leftover: found by the sweep, e.g. after a crash between storing bytes and their row).",
            ("reason",),
            registry=r,
        )
        self.housekeeping_runs = Counter(
            "mesh_housekeeping_runs_total",
            "Housekeeping passes by outcome (success or failure).",
            ("outcome",),
            registry=r,
        )
        self.housekeeping_duration = Histogram(
            "mesh_housekeeping_duration_seconds",
            "Time one housekeeping pass took.",
            buckets=HOUSEKEEPING_BUCKETS,
            registry=r,
        )
        self.housekeeping_last_success = Gauge(
            "mesh_housekeeping_last_success_timestamp_seconds",
            "Unix time the last successful housekeeping pass of this node finished (0: none yet).",
            registry=r,
        )
        for outcome in ("success", "failure"):
            # Both series exist from the start, so a rate or an alert over them never sees a missing series.
            self.housekeeping_runs.labels(outcome)
        for reason in ("released", "leftover"):
            self.orphan_blobs_deleted.labels(reason)
        for store in ("inline", "blob"):
            self.chunks_stored.labels(store)
        self.inbox_messages = Gauge(
            "mesh_inbox_messages", "Messages waiting in inboxes (accepted, not acknowledged), sampled.", registry=r
        )
        self.store_bytes = Gauge(
            "mesh_store_bytes",
            "Bytes the metadata store occupies, by part (database; SQLite also wal, tokens, tokens_wal), sampled.",
            ("part",),
            registry=r,
        )
        self.directory_listening = Gauge(
            "mesh_directory_cache_listening",
            "1 while this node hears of directory changes and serves mailboxes and workflows from memory, 0 while "
            "it reads them from the database (PostgreSQL with the directory cache on; absent otherwise), sampled.",
            ("store",),
            registry=r,
        )
        self.db_pool_size = Gauge("mesh_db_pool_connections", "Database pool connections open.", registry=r)
        self.db_pool_in_use = Gauge("mesh_db_pool_connections_in_use", "Database pool connections busy.", registry=r)
        Info("mesh_build", "The running broker's version.", registry=r).info({"version": _version()})

    def observe_request(self, route: str, method: str, status_class: str, seconds: float) -> None:
        """One request's latency. The labels are bounded (route templates, methods, status classes), and so is this
        cache of their children."""
        key = (route, method, status_class)
        child = self._request_durations.get(key)
        if child is None:
            child = self._request_durations[key] = self.request_duration.labels(*key)
        child.observe(seconds)

    def count_rejected_send(self, workflow_id: str, error: BrokerError | ValidationFailed) -> None:
        """A refused send, labelled by a workflow only if an accepted message already carried it (see known())."""
        code = error_code_label(error) if isinstance(error, BrokerError) else VALIDATION
        self.messages_rejected.labels(self.workflow.known(workflow_id), code).inc()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mesh-broker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return getattr(broker, "__version__", "unknown")
