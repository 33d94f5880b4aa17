-- Named queries only the embedded (SQLite) store writes this way; postgres.sql has a block of each name.
-- Lists of IDs arrive as one JSON array (json_each); no row locks: the single writer thread serialises nodes.
-- A block starts with "-- name: <name>" and a line saying what it is for.

-- name: lock_message
-- A message's status and chunk count before a chunk is stored (the writer is single: nothing to lock).
SELECT status, total_chunks FROM messages WHERE message_id = ?;

-- name: claim_accepted
-- Which of the listed messages are still accepted (housekeeping claims them for non-delivery).
SELECT message_id FROM messages WHERE message_id IN (SELECT value FROM json_each(?)) AND status = 'accepted';

-- name: claim_abandoned_uploads
-- Uploads started before a time and never finished, oldest first.
SELECT message_id FROM messages WHERE status = 'uploading' AND created_at < ? ORDER BY created_at LIMIT ?;

-- name: claim_retention_expired
-- Messages created before the retention cut-off, oldest first, in any status.
SELECT message_id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?;

-- name: queue_message_orphans
-- Queue the blobs of the listed messages' chunks (deleted after commit by housekeeping).
INSERT INTO orphan_blobs (blob_key, since)
SELECT blob_key, ? FROM message_chunks WHERE message_id IN (SELECT value FROM json_each(?)) AND blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_message_chunks
-- Delete the listed messages' chunk rows.
DELETE FROM message_chunks WHERE message_id IN (SELECT value FROM json_each(?));

-- name: delete_messages
-- Delete the listed messages with their chunks and events.
DELETE FROM messages WHERE message_id IN (SELECT value FROM json_each(?));

-- name: known_blob_keys
-- Which of the listed blob keys a chunk row points at (the rest may be crash leftovers).
SELECT blob_key FROM message_chunks WHERE blob_key IN (SELECT value FROM json_each(?));

-- name: take_orphans
-- Take up to n queued orphan blobs, oldest first, off the queue.
DELETE FROM orphan_blobs WHERE blob_key IN (SELECT blob_key FROM orphan_blobs ORDER BY since LIMIT ?)
RETURNING blob_key;
