-- Named queries only the embedded (SQLite) store writes this way; postgres.sql has a block of each name.
-- Lists of IDs arrive as one JSON array (json_each); no row locks: the single writer thread serialises nodes.
-- A block starts with "-- name: <name>" and a line saying what it is for.
--
-- The writes of a send, a chunk and an acknowledgement (create_message, add_chunk, acknowledge, append_event) are
-- one statement each in postgres.sql; SQLite cannot write in a WITH clause, so here each is a few statements
-- separated by `;`, run in order on the writer thread inside its transaction (sqlite.py). Their placeholders are
-- numbered (?1, ?2, ...) alike in both files, so the plan hands both the same parameters; each statement's
-- result is read by the next through changes() (rows the statement before changed), the last one's is the answer.

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

-- Messages: the writes of a send, a chunk upload and an acknowledgement, a few statements each -------------------

-- name: create_message
-- A new message (a send, a report): its row, its first chunk and its events (numbered 1..n in the order given;
-- ?20 = n; ?26..?31 are JSON arrays, one per event column).
INSERT INTO messages (
    message_id, message_type, sender, sender_party, recipient, recipient_party, workflow_id, total_chunks,
    content_encoding, meta, local_id, status, file_size, created_at, delivered_at, expires_at,
    acknowledged_at, status_at, linked_message_id, event_count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20);
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data)
VALUES (?1, ?21, ?22, ?23, ?24, ?25);
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT ?1, s.key + 1, s.value, a.value, e.value, c.value, d.value, l.value
FROM json_each(?26) s
JOIN json_each(?27) a ON a.key = s.key JOIN json_each(?28) e ON e.key = s.key
JOIN json_each(?29) c ON c.key = s.key JOIN json_each(?30) d ON d.key = s.key
JOIN json_each(?31) l ON l.key = s.key;

-- name: add_chunk
-- Store chunk ?2 of a message that takes it (replacing one sent before, whose blob is queued as an orphan) and,
-- when it was the last missing one, deliver the message (status ?8, its delivery event). The rule is postgres.sql's
-- (a message of type ?19 in status ?7, sent by ?15, ?2 <= its ?16 chunks, encoding ?17, its other chunks' bytes
-- plus ?4 at most ?18), written out in the orphan's and the chunk's statements (the update and the event follow the
-- chunk's through changes()) and again in the answer: no write before it changes the rule's inputs but the status,
-- which the answer reads through changes(). Answers 1 (the single writer: the row read is always the row changed),
-- whether the chunk was stored and whether it delivered, then the message's facts as they were before (as
-- postgres.sql's does).
INSERT INTO orphan_blobs (blob_key, since)
SELECT c.blob_key, ?9 FROM message_chunks c JOIN messages m ON m.message_id = c.message_id
WHERE c.message_id = ?1 AND c.chunk_number = ?2 AND c.blob_key NOT IN ('', ?3) AND m.status = ?7
    AND m.message_type = ?19 AND m.sender = ?15 AND ?2 <= m.total_chunks AND m.total_chunks = ?16
    AND m.content_encoding = ?17
    AND (SELECT coalesce(sum(size), 0) FROM message_chunks WHERE message_id = ?1 AND chunk_number <> ?2) + ?4 <= ?18
ON CONFLICT DO NOTHING;
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data)
SELECT ?1, ?2, ?3, ?4, ?5, ?6 FROM messages m
WHERE m.message_id = ?1 AND m.status = ?7
    AND m.message_type = ?19 AND m.sender = ?15 AND ?2 <= m.total_chunks AND m.total_chunks = ?16
    AND m.content_encoding = ?17
    AND (SELECT coalesce(sum(size), 0) FROM message_chunks WHERE message_id = ?1 AND chunk_number <> ?2) + ?4 <= ?18
ON CONFLICT (message_id, chunk_number) DO UPDATE SET
    blob_key = excluded.blob_key, size = excluded.size, sha256 = excluded.sha256, data = excluded.data;
UPDATE messages SET
    file_size = t.size,
    status = CASE WHEN t.stored >= total_chunks THEN ?8 ELSE status END,
    delivered_at = CASE WHEN t.stored >= total_chunks THEN ?9 ELSE delivered_at END,
    expires_at = CASE WHEN t.stored >= total_chunks THEN ?10 ELSE expires_at END,
    status_at = CASE WHEN t.stored >= total_chunks THEN ?9 ELSE status_at END,
    event_count = event_count + (t.stored >= total_chunks)
FROM (SELECT count(*) AS stored, coalesce(sum(size), 0) AS size FROM message_chunks WHERE message_id = ?1) AS t
WHERE message_id = ?1 AND changes() = 1;
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT message_id, event_count, ?8, ?9, ?11, ?12, ?13, ?14 FROM messages
WHERE message_id = ?1 AND status = ?8 AND changes() = 1;
SELECT 1,
    m.message_type = ?19 AND m.sender = ?15 AND ?2 <= m.total_chunks AND m.total_chunks = ?16
    AND m.content_encoding = ?17 AND o.size + ?4 <= ?18 AND (m.status = ?7 OR changes() = 1),
    changes() = 1,
    m.sender, m.recipient, m.workflow_id, m.message_type, CASE WHEN changes() = 1 THEN ?7 ELSE m.status END,
    m.total_chunks, m.content_encoding, o.size
FROM messages m,
    (SELECT coalesce(sum(size), 0) AS size FROM message_chunks WHERE message_id = ?1 AND chunk_number <> ?2) AS o
WHERE m.message_id = ?1;

-- name: acknowledge
-- Move message ?3 from status ?4 to ?1 and append that event when recipient ?9 is its recipient; answers its
-- workflow ID, no row when nothing changed (it is unknown, another's or no longer in ?4).
UPDATE messages SET status = ?1, acknowledged_at = ?2, status_at = ?2, event_count = event_count + 1
WHERE message_id = ?3 AND status = ?4 AND recipient = ?9;
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT message_id, event_count, ?1, ?2, ?5, ?6, ?7, ?8 FROM messages WHERE message_id = ?3 AND changes() = 1;
SELECT workflow_id FROM messages WHERE message_id = ?3 AND changes() = 1;

-- name: append_event
-- Append an event and make its status the message's, with the time columns that status implies (?3: it is the
-- acknowledgement, ?4: it is the delivery); nothing for an unknown message.
UPDATE messages SET status = ?1, status_at = ?2,
    acknowledged_at = CASE WHEN ?3 THEN ?2 ELSE acknowledged_at END,
    delivered_at = CASE WHEN ?4 THEN coalesce(delivered_at, ?2) ELSE delivered_at END,
    event_count = event_count + 1
WHERE message_id = ?5;
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT message_id, event_count, ?1, ?2, ?6, ?7, ?8, ?9 FROM messages WHERE message_id = ?5 AND changes() = 1;

-- name: use_tokens
-- Record the tokens ?1 (each expiring at ?2's value in the same place) that were not used before; answers those
-- recorded. postgres.sql's batch (every dialect carries every plan's block); the embedded store's token writer
-- groups single writes itself, so only the contract suite runs this one.
INSERT INTO auth_tokens (token_key, expires_at)
SELECT k.value, e.value FROM json_each(?1) k JOIN json_each(?2) e ON e.key = k.key WHERE true
ON CONFLICT (token_key) DO NOTHING
RETURNING token_key;
