"""The web page's metrics, on the broker's own registry (broker/metrics.py): sign-ins, uploads, downloads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

SIGN_IN_METHODS = ("password", "oidc")
SIGN_IN_OUTCOMES = ("success", "failure", "locked", "inactive", "no_mailboxes")
UPLOAD_OUTCOMES = ("sent", "too_large", "refused")


class UiMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.sign_ins = Counter(
            "mesh_ui_sign_ins_total",
            "Web page sign-ins by method (password, oidc) and outcome (success; failure: wrong mailbox or "
            "password, or an identity provider's refusal; locked: refused unchecked during a lock-out; inactive; "
            "no_mailboxes: an identity with no mailbox to use).",
            ("method", "outcome"),
            registry=registry,
        )
        self.uploads = Counter(
            "mesh_ui_uploads_total",
            "Files sent through the web page, by outcome (sent; too_large: over the size limit, nothing stored; "
            "refused: a field or a MESH rule refused it).",
            ("outcome",),
            registry=registry,
        )
        self.downloads = Counter(
            "mesh_ui_downloads_total", "Messages downloaded through the web page.", registry=registry
        )
        # Every series exists from the start, so a rate over them never meets a missing series.
        for method in SIGN_IN_METHODS:
            for outcome in SIGN_IN_OUTCOMES:
                self.sign_ins.labels(method, outcome)
        for outcome in UPLOAD_OUTCOMES:
            self.uploads.labels(outcome)
