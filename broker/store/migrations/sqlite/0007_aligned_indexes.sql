-- The two dialects' indexes made the same (tests/contract/test_schema.py compares them): partial indexes over
-- the rows each query reads, as PostgreSQL had from the start. Smaller than the full (status, ...) indexes they
-- replace, so a message state change touches fewer index entries.
DROP INDEX messages_inbox;
CREATE INDEX messages_inbox ON messages (recipient, delivered_at, message_id) WHERE status = 'accepted';
DROP INDEX messages_expiry;
CREATE INDEX messages_expiry ON messages (expires_at) WHERE status = 'accepted';
DROP INDEX messages_status_created;
CREATE INDEX messages_uploading ON messages (created_at) WHERE status = 'uploading';
DROP INDEX mailboxes_ods;
CREATE INDEX mailboxes_ods ON mailboxes (upper(ods_code));
