-- Named queries only the production (PostgreSQL) store writes this way; sqlite.sql has a block of each name.
-- Lists of IDs arrive as text[]; rows are locked (FOR UPDATE) so nodes sharing the database serialise, and
-- housekeeping's claims skip rows another node holds (SKIP LOCKED) rather than wait for them.
-- A block starts with "-- name: <name>" and a line saying what it is for.

-- name: lock_message
-- A message's status and chunk count before a chunk is stored, its row locked against chunks at other nodes.
SELECT status, total_chunks FROM messages WHERE message_id = ? FOR UPDATE;

-- name: claim_accepted
-- Lock those of the listed messages that are still accepted and no other node holds (non-delivery claims).
SELECT message_id FROM messages WHERE message_id = ANY(?::text[]) AND status = 'accepted'
FOR UPDATE SKIP LOCKED;

-- name: claim_abandoned_uploads
-- Lock uploads started before a time and never finished, oldest first, skipping those another node holds.
SELECT message_id FROM messages WHERE status = 'uploading' AND created_at < ? ORDER BY created_at LIMIT ?
FOR UPDATE SKIP LOCKED;

-- name: claim_retention_expired
-- Lock messages created before the retention cut-off, oldest first, skipping those another node holds.
SELECT message_id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ? FOR UPDATE SKIP LOCKED;

-- name: queue_message_orphans
-- Queue the blobs of the listed messages' chunks (deleted after commit by housekeeping).
INSERT INTO orphan_blobs (blob_key, since)
SELECT blob_key, ? FROM message_chunks WHERE message_id = ANY(?::text[]) AND blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_message_chunks
-- Delete the listed messages' chunk rows.
DELETE FROM message_chunks WHERE message_id = ANY(?::text[]);

-- name: delete_messages
-- Delete the listed messages with their chunks and events.
DELETE FROM messages WHERE message_id = ANY(?::text[]);

-- name: known_blob_keys
-- Which of the listed blob keys a chunk row points at (the rest may be crash leftovers).
SELECT DISTINCT blob_key FROM message_chunks WHERE blob_key = ANY(?::text[]);

-- name: take_orphans
-- Take up to n queued orphan blobs, oldest first, off the queue; rows another node is taking are skipped.
DELETE FROM orphan_blobs WHERE blob_key IN (
    SELECT blob_key FROM orphan_blobs ORDER BY since LIMIT ? FOR UPDATE SKIP LOCKED
) RETURNING blob_key;
