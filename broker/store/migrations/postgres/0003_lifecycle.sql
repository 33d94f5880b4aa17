-- Indexes for housekeeping (inbox expiry, abandoned uploads, retention), the rich inbox and the crash-leftover
-- sweep, which asks whether any chunk row still points at a blob key.
CREATE INDEX messages_expiry ON messages (expires_at) WHERE status = 'accepted';
CREATE INDEX messages_uploading ON messages (created_at) WHERE status = 'uploading';
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_rich_inbox ON messages (recipient, created_at, message_id);
CREATE INDEX message_chunks_blob_key ON message_chunks (blob_key);
