-- Indexes for housekeeping (inbox expiry, abandoned uploads, retention), the rich inbox and the crash-leftover
-- sweep, which asks whether any chunk row still points at a blob key.
CREATE INDEX messages_expiry ON messages (status, expires_at);
CREATE INDEX messages_status_created ON messages (status, created_at);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_rich_inbox ON messages (recipient, created_at, message_id);
CREATE INDEX message_chunks_blob_key ON message_chunks (blob_key);
