-- The Idempotency-Key a sender may give on the first POST of a send (our extension, docs/api.md): the key, a
-- fingerprint of that send's headers and the message it created. The row lives exactly as long as its message
-- (ON DELETE CASCADE: the retention purge takes both), and is written in the message's own transaction.
CREATE TABLE idempotency_keys (
    sender          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    message_id      TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    PRIMARY KEY (sender, idempotency_key)
);
-- The cascade finds a deleted message's key by message ID (without it, each purged message would scan the table).
CREATE INDEX idempotency_keys_message ON idempotency_keys (message_id);
