-- The web page (broker/ui): signed-in sessions, kept here so that any node serves any page, and failed sign-ins
-- counted per mailbox and per address for the lock-out. A session's key is the SHA-256 of its cookie's token: the
-- token itself is never stored. Times are integer microseconds since the epoch.
CREATE TABLE web_sessions (
    session_key     TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    mailbox_id      TEXT NOT NULL,
    mailboxes       TEXT NOT NULL,
    csrf_token      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    seen_at         INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
-- The purge finds sessions past their absolute expiry, and those idle too long.
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
CREATE INDEX web_sessions_seen ON web_sessions (seen_at);

CREATE TABLE web_sign_in_failures (
    failure_key     TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    locked_until    INTEGER
);
CREATE INDEX web_sign_in_failures_last ON web_sign_in_failures (last_failed_at);
