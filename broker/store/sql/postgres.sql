-- Named queries only the production (PostgreSQL) store writes this way; sqlite.sql has a block of each name.
-- Lists of IDs arrive as text[]; rows are locked (FOR UPDATE) so nodes sharing the database serialise, and
-- housekeeping's claims skip rows another node holds (SKIP LOCKED) rather than wait for them.
-- A block starts with "-- name: <name>" and a line saying what it is for.
--
-- The writes of a send, a chunk and an acknowledgement are each one statement here (data-modifying WITH
-- clauses), sent without BEGIN and COMMIT: one round trip, and the statement is its own transaction. Their
-- placeholders are numbered (?1, ?2, ...: the plan's parameters, some used twice), as in sqlite.sql's blocks of
-- the same names, which do the same in a few statements. Every statement here reads the snapshot taken when it
-- began, even after waiting for another writer's row lock, so none numbers an event or counts chunks from a read
-- that could be stale: the event's seq comes from the message row's event_count, which an UPDATE re-reads
-- after such a wait, and add_chunk checks that the row it locked is the row its snapshot saw.

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

-- Messages: the writes of a send, a chunk upload and an acknowledgement, one statement each -----------------------

-- name: create_message
-- A new message (a send, a report): its row, its first chunk and its events (numbered 1..n in the order given;
-- ?20 = n), in one statement. The chunk and events are made from the message row's RETURNING, so the message's
-- own insert runs first (a used message ID fails on messages_pkey); the foreign keys are checked at the end.
WITH message AS (
    INSERT INTO messages (
        message_id, message_type, sender, sender_party, recipient, recipient_party, workflow_id, total_chunks,
        content_encoding, meta, local_id, status, file_size, created_at, delivered_at, expires_at,
        acknowledged_at, status_at, linked_message_id, event_count)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
    RETURNING message_id
), chunk AS (
    INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data)
    SELECT message_id, ?21, ?22, ?23, ?24, ?25 FROM message
)
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT m.message_id, e.seq, e.status, e.at, e.event, e.code, e.description, e.linked_message_id
FROM message m, unnest(?26::text[], ?27::timestamptz[], ?28::text[], ?29::text[], ?30::text[], ?31::text[])
    WITH ORDINALITY AS e (status, at, event, code, description, linked_message_id, seq);

-- name: add_chunk
-- Store chunk ?2 of a message that takes it (replacing one sent before, whose blob is queued as an orphan) and,
-- when it was the last missing one, deliver the message (status ?8, its delivery event). It takes it when it is a
-- message of type ?19 still in status ?7, sent by ?15, with ?2 <= its total chunks, ?16 chunks, encoding ?17, and its
-- other chunks' bytes plus ?4 are at most ?18. Answers whether the locked row is the one this statement's snapshot
-- saw (when not, another writer changed the message meanwhile, nothing was written and the plan runs the statement
-- again), whether the chunk was stored and whether it delivered, then the message's facts as locked (the plan's
-- ChunkFacts, for the service to explain a refusal); no row for an unknown message.
WITH locked AS (
    SELECT sender, recipient, workflow_id, message_type, status, total_chunks, content_encoding,
        xmin = (SELECT xmin FROM messages WHERE message_id = ?1) AS fresh
    FROM messages WHERE message_id = ?1 FOR UPDATE
), others AS (
    SELECT count(*) AS stored, coalesce(sum(size), 0) AS size
    FROM message_chunks WHERE message_id = ?1 AND chunk_number <> ?2
), open AS (
    SELECT l.total_chunks, o.stored, o.size FROM locked l, others o
    WHERE l.fresh AND l.status = ?7 AND l.message_type = ?19 AND l.sender = ?15 AND ?2 <= l.total_chunks
        AND l.total_chunks = ?16 AND l.content_encoding = ?17 AND o.size + ?4 <= ?18::bigint
), previous AS (
    SELECT blob_key FROM message_chunks WHERE message_id = ?1 AND chunk_number = ?2
), decided AS (
    SELECT stored + 1 >= total_chunks AS complete, size + ?4 AS size FROM open
), orphan AS (
    INSERT INTO orphan_blobs (blob_key, since)
    SELECT previous.blob_key, ?9 FROM previous, open WHERE previous.blob_key NOT IN ('', ?3)
    ON CONFLICT DO NOTHING
), chunk AS (
    INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6 FROM open
    ON CONFLICT (message_id, chunk_number) DO UPDATE SET
        blob_key = excluded.blob_key, size = excluded.size, sha256 = excluded.sha256, data = excluded.data
), progress AS (
    UPDATE messages m SET
        file_size = d.size,
        status = CASE WHEN d.complete THEN ?8 ELSE m.status END,
        delivered_at = CASE WHEN d.complete THEN ?9 ELSE m.delivered_at END,
        expires_at = CASE WHEN d.complete THEN ?10 ELSE m.expires_at END,
        status_at = CASE WHEN d.complete THEN ?9 ELSE m.status_at END,
        event_count = m.event_count + CASE WHEN d.complete THEN 1 ELSE 0 END
    FROM decided d WHERE m.message_id = ?1
    RETURNING d.complete, m.event_count
), delivery AS (
    INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
    SELECT ?1, event_count, ?8, ?9, ?11, ?12, ?13, ?14 FROM progress WHERE complete
)
SELECT l.fresh, EXISTS (SELECT FROM open), coalesce((SELECT complete FROM progress), false),
    l.sender, l.recipient, l.workflow_id, l.message_type, l.status, l.total_chunks, l.content_encoding, o.size
FROM locked l, others o;

-- name: acknowledge
-- Move message ?3 from status ?4 to ?1 and append that event, in one statement, when recipient ?9 is its recipient;
-- answers its workflow ID, no row when nothing changed. Of two nodes racing, the UPDATE's row lock lets one see it
-- still in ?4 (the other changes nothing and appends nothing).
WITH changed AS (
    UPDATE messages SET status = ?1, acknowledged_at = ?2, status_at = ?2, event_count = event_count + 1
    WHERE message_id = ?3 AND status = ?4 AND recipient = ?9
    RETURNING event_count, workflow_id
), appended AS (
    INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
    SELECT ?3, event_count, ?1, ?2, ?5, ?6, ?7, ?8 FROM changed
)
SELECT workflow_id FROM changed;

-- name: append_event
-- Append an event and make its status the message's, with the time columns that status implies (?3: it is the
-- acknowledgement, ?4: it is the delivery), in one statement; nothing for an unknown message.
WITH changed AS (
    UPDATE messages SET status = ?1, status_at = ?2,
        acknowledged_at = CASE WHEN ?3 THEN ?2 ELSE acknowledged_at END,
        delivered_at = CASE WHEN ?4 THEN coalesce(delivered_at, ?2) ELSE delivered_at END,
        event_count = event_count + 1
    WHERE message_id = ?5
    RETURNING event_count
)
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
SELECT ?5, event_count, ?1, ?2, ?6, ?7, ?8, ?9 FROM changed;

-- name: use_tokens
-- Record the tokens ?1 (each expiring at ?2's value in the same place) that were not used before; answers those
-- recorded. The replay cache's writes of concurrent requests, one statement for all (broker/store/token_batch.py).
INSERT INTO auth_tokens (token_key, expires_at)
SELECT * FROM unnest(?1::text[], ?2::timestamptz[])
ON CONFLICT (token_key) DO NOTHING
RETURNING token_key;
