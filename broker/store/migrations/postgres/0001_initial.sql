-- The production store's first schema (PostgreSQL).
CREATE TABLE mailboxes (
    mailbox_id      text PRIMARY KEY,
    password        text NOT NULL,
    mailbox_name    text NOT NULL DEFAULT '',
    ods_code        text NOT NULL DEFAULT '',
    org_code        text NOT NULL DEFAULT '',
    org_name        text NOT NULL DEFAULT '',
    billing_entity  text NOT NULL DEFAULT '',
    active          boolean NOT NULL DEFAULT true,
    last_seen_at    timestamptz,
    last_client     text NOT NULL DEFAULT ''
);
CREATE INDEX mailboxes_ods ON mailboxes (upper(ods_code));

CREATE TABLE workflows (
    workflow_id     text PRIMARY KEY,
    restricted      boolean NOT NULL DEFAULT false
);

CREATE TABLE workflow_members (
    workflow_id     text NOT NULL REFERENCES workflows (workflow_id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('sender', 'receiver')),
    mailbox_id      text NOT NULL,
    PRIMARY KEY (workflow_id, role, mailbox_id)
);

CREATE TABLE messages (
    message_id          text PRIMARY KEY,
    message_type        text NOT NULL,
    sender              text NOT NULL,
    sender_party        jsonb NOT NULL,
    recipient           text NOT NULL,
    recipient_party     jsonb NOT NULL,
    workflow_id         text NOT NULL,
    total_chunks        integer NOT NULL,
    content_encoding    text NOT NULL DEFAULT '',
    meta                jsonb NOT NULL,
    local_id            text NOT NULL DEFAULT '',
    status              text NOT NULL,
    file_size           bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    delivered_at        timestamptz,
    expires_at          timestamptz,
    acknowledged_at     timestamptz,
    status_at           timestamptz NOT NULL,
    linked_message_id   text NOT NULL DEFAULT ''
);
-- The inbox list: accepted messages of one recipient in delivery order (keyset pagination).
CREATE INDEX messages_inbox ON messages (recipient, delivered_at, message_id) WHERE status = 'accepted';
CREATE INDEX messages_recipient ON messages (recipient);
CREATE INDEX messages_outbox ON messages (sender, created_at);
CREATE INDEX messages_local_id ON messages (sender, local_id) WHERE local_id <> '';

CREATE TABLE message_chunks (
    message_id      text NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    chunk_number    integer NOT NULL,
    blob_key        text NOT NULL,
    size            bigint NOT NULL,
    PRIMARY KEY (message_id, chunk_number)
);

CREATE TABLE message_events (
    message_id          text NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    seq                 integer NOT NULL,
    status              text NOT NULL,
    at                  timestamptz NOT NULL,
    event               text NOT NULL DEFAULT '',
    code                text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    linked_message_id   text NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, seq)
);

-- Single-use auth tokens, shared by every node so a token used on one is refused on all.
CREATE TABLE auth_tokens (
    token_key   text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

-- Blobs whose rows were replaced or removed: deleted by housekeeping after the transaction commits.
CREATE TABLE orphan_blobs (
    blob_key    text PRIMARY KEY,
    since       timestamptz NOT NULL
);
