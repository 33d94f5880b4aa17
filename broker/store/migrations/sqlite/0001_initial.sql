-- The embedded store's first schema. Times are integer microseconds since the Unix epoch (UTC).
CREATE TABLE mailboxes (
    mailbox_id      TEXT PRIMARY KEY,
    password        TEXT NOT NULL,
    mailbox_name    TEXT NOT NULL DEFAULT '',
    ods_code        TEXT NOT NULL DEFAULT '',
    org_code        TEXT NOT NULL DEFAULT '',
    org_name        TEXT NOT NULL DEFAULT '',
    billing_entity  TEXT NOT NULL DEFAULT '',
    active          INTEGER NOT NULL DEFAULT 1,
    last_seen_at    INTEGER,
    last_client     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX mailboxes_ods ON mailboxes (ods_code);

CREATE TABLE workflows (
    workflow_id     TEXT PRIMARY KEY,
    restricted      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workflow_members (
    workflow_id     TEXT NOT NULL REFERENCES workflows (workflow_id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('sender', 'receiver')),
    mailbox_id      TEXT NOT NULL,
    PRIMARY KEY (workflow_id, role, mailbox_id)
);

CREATE TABLE messages (
    message_id          TEXT PRIMARY KEY,
    message_type        TEXT NOT NULL,
    sender              TEXT NOT NULL,
    sender_party        TEXT NOT NULL,
    recipient           TEXT NOT NULL,
    recipient_party     TEXT NOT NULL,
    workflow_id         TEXT NOT NULL,
    total_chunks        INTEGER NOT NULL,
    content_encoding    TEXT NOT NULL DEFAULT '',
    meta                TEXT NOT NULL,
    local_id            TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL,
    file_size           INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    delivered_at        INTEGER,
    expires_at          INTEGER,
    acknowledged_at     INTEGER,
    status_at           INTEGER NOT NULL,
    linked_message_id   TEXT NOT NULL DEFAULT ''
);
-- The inbox list: accepted messages of one recipient in delivery order (keyset pagination).
CREATE INDEX messages_inbox ON messages (recipient, status, delivered_at, message_id);
CREATE INDEX messages_outbox ON messages (sender, created_at);
CREATE INDEX messages_local_id ON messages (sender, local_id) WHERE local_id <> '';

CREATE TABLE message_chunks (
    message_id      TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    chunk_number    INTEGER NOT NULL,
    blob_key        TEXT NOT NULL,
    size            INTEGER NOT NULL,
    PRIMARY KEY (message_id, chunk_number)
);

CREATE TABLE message_events (
    message_id          TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    seq                 INTEGER NOT NULL,
    status              TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    event               TEXT NOT NULL DEFAULT '',
    code                TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    linked_message_id   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, seq)
);

-- Single-use auth tokens, kept for longer than the clock-skew window allows a token to live.
CREATE TABLE auth_tokens (
    token_key   TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

-- Blobs whose rows were replaced or removed: deleted by the broker after the transaction commits.
CREATE TABLE orphan_blobs (
    blob_key    TEXT PRIMARY KEY,
    since       INTEGER NOT NULL
);
