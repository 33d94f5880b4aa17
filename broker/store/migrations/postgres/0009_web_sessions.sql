-- The web page (broker/ui): signed-in sessions, kept here so that any node serves any page, and failed sign-ins
-- counted per mailbox and per address for the lock-out. A session's key is the SHA-256 of its cookie's token: the
-- token itself is never stored.
CREATE TABLE web_sessions (
    session_key     text PRIMARY KEY,
    user_id         text NOT NULL,
    mailbox_id      text NOT NULL,
    mailboxes       text NOT NULL,
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL,
    seen_at         timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
);
-- The purge finds sessions past their absolute expiry, and those idle too long.
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
CREATE INDEX web_sessions_seen ON web_sessions (seen_at);

CREATE TABLE web_sign_in_failures (
    failure_key     text PRIMARY KEY,
    failures        integer NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    locked_until    timestamptz
);
CREATE INDEX web_sign_in_failures_last ON web_sign_in_failures (last_failed_at);
