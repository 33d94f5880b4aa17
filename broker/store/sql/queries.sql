-- Named queries both metadata stores run as written. Placeholders are `?`; the loader renumbers them $1, $2, ...
-- for PostgreSQL. A block starts with "-- name: <name>" and a line saying what it is for. Statements that truly
-- differ between the dialects (arrays, row locks) live in sqlite.sql and postgres.sql under the same names.
-- Status literals ('accepted', 'uploading') stay in SQL where a partial index names them (0007); a test checks
-- every one is a models.Status value.

-- Directory ---------------------------------------------------------------------------------------------------

-- name: get_mailbox
-- One mailbox by ID, active or not (every request's caller; a send's recipient).
SELECT mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
FROM mailboxes WHERE mailbox_id = ?;

-- name: put_mailbox
-- Create or replace a mailbox (the handshake columns last_seen_at and last_client are kept).
INSERT INTO mailboxes (mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (mailbox_id) DO UPDATE SET
    password = excluded.password, mailbox_name = excluded.mailbox_name, ods_code = excluded.ods_code,
    org_code = excluded.org_code, org_name = excluded.org_name, billing_entity = excluded.billing_entity,
    active = excluded.active;

-- name: list_mailboxes
-- Every mailbox, by ID (the CLI's listing).
SELECT mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
FROM mailboxes ORDER BY mailbox_id;

-- name: count_mailboxes
-- How many mailboxes exist (demo seeding runs only on an empty directory).
SELECT count(*) FROM mailboxes;

-- name: record_handshake
-- When and with what client a mailbox last handshook.
UPDATE mailboxes SET last_seen_at = ?, last_client = ? WHERE mailbox_id = ?;

-- name: put_workflow
-- Create or replace a workflow's own row (its members follow in the same transaction).
INSERT INTO workflows (workflow_id, restricted, patient_addressing) VALUES (?, ?, ?)
ON CONFLICT (workflow_id) DO UPDATE SET
    restricted = excluded.restricted, patient_addressing = excluded.patient_addressing;

-- name: clear_workflow_members
-- Forget a workflow's senders and receivers before its new list is written.
DELETE FROM workflow_members WHERE workflow_id = ?;

-- name: add_workflow_member
-- One sender or receiver of a workflow.
INSERT INTO workflow_members (workflow_id, role, mailbox_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING;

-- name: get_workflow
-- One workflow's own row, or nothing when it was never registered (unrestricted).
SELECT workflow_id, restricted, patient_addressing FROM workflows WHERE workflow_id = ?;

-- name: list_workflows
-- Every workflow's own row, by ID.
SELECT workflow_id, restricted, patient_addressing FROM workflows ORDER BY workflow_id;

-- name: workflow_members
-- A workflow's senders and receivers.
SELECT role, mailbox_id FROM workflow_members WHERE workflow_id = ? ORDER BY mailbox_id;

-- name: receivers
-- Active mailboxes registered to receive a workflow (endpoint lookup).
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = ? AND w.role = 'receiver' AND m.active
ORDER BY m.mailbox_id;

-- name: receivers_by_ods
-- Active receivers of a workflow within one ODS code (endpoint lookup; GP routing).
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = ? AND w.role = 'receiver' AND m.active AND upper(m.ods_code) = upper(?)
ORDER BY m.mailbox_id;

-- Local demographics directory ---------------------------------------------------------------------------------

-- name: put_patient
-- Create or replace one patient of the local demographics directory.
INSERT INTO patients (nhs_number, date_of_birth, family_name, gp_ods_code) VALUES (?, ?, ?, ?)
ON CONFLICT (nhs_number) DO UPDATE SET
    date_of_birth = excluded.date_of_birth, family_name = excluded.family_name, gp_ods_code = excluded.gp_ods_code;

-- name: get_patient
-- One patient by NHS number (GP routing).
SELECT nhs_number, date_of_birth, family_name, gp_ods_code FROM patients WHERE nhs_number = ?;

-- Replay cache -------------------------------------------------------------------------------------------------

-- name: use_token
-- Record a token as used; it changes no row when it was already there (a replay).
INSERT INTO auth_tokens (token_key, expires_at) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING;

-- name: purge_tokens
-- Forget tokens whose expiry has passed.
DELETE FROM auth_tokens WHERE expires_at < ?;

-- Messages -----------------------------------------------------------------------------------------------------
-- (The writes of a send, a chunk and an acknowledgement are one statement each on PostgreSQL, a few on SQLite's
-- single writer: create_message, add_chunk, acknowledge and append_event live in the dialect files.)

-- name: get_message
-- One message with its events in one read (one round trip): a row per event, oldest first, each the message's
-- columns (rows.message_from_row) then the event's (rows.event_from_row); a message without events is one row
-- whose event columns are null.
SELECT m.message_id, m.message_type, m.sender_party, m.recipient_party, m.workflow_id, m.total_chunks,
       m.content_encoding, m.meta, m.status, m.created_at, m.file_size, m.delivered_at, m.expires_at,
       m.acknowledged_at, m.status_at, m.linked_message_id,
       e.status, e.at, e.event, e.code, e.description, e.linked_message_id
FROM messages m LEFT JOIN message_events e ON e.message_id = m.message_id
WHERE m.message_id = ? ORDER BY e.seq;

-- name: get_message_and_chunk
-- A download's one read: get_message's rows with chunk ?2's columns after them (null where the message has no
-- such chunk). The chunk repeats on each event's row; an accepted message has one or two events.
SELECT m.message_id, m.message_type, m.sender_party, m.recipient_party, m.workflow_id, m.total_chunks,
       m.content_encoding, m.meta, m.status, m.created_at, m.file_size, m.delivered_at, m.expires_at,
       m.acknowledged_at, m.status_at, m.linked_message_id,
       e.status, e.at, e.event, e.code, e.description, e.linked_message_id,
       c.blob_key, c.size, c.sha256, c.data
FROM messages m LEFT JOIN message_events e ON e.message_id = m.message_id
LEFT JOIN message_chunks c ON c.message_id = m.message_id AND c.chunk_number = ?2
WHERE m.message_id = ?1 ORDER BY e.seq;

-- name: find_by_local_id
-- A sender's messages carrying one local ID, newest first (tracking by local ID).
SELECT message_id FROM messages WHERE sender = ? AND local_id = ? ORDER BY created_at DESC LIMIT ?;

-- Inbox and listings -------------------------------------------------------------------------------------------
-- (The pages themselves are built by store/paging.py: their WHERE clause depends on the cursor and filter.)

-- name: inbox_cursor
-- Where an inbox page after one of the recipient's messages starts (v1's continue_from is a message ID).
SELECT delivered_at, message_id FROM messages
WHERE recipient = ? AND message_id = ? AND delivered_at IS NOT NULL;

-- name: count_inbox
-- How many messages wait in one inbox.
SELECT count(*) FROM messages WHERE recipient = ? AND status = 'accepted';

-- name: count_accepted
-- How many messages wait across all inboxes (the inbox-depth gauge).
SELECT count(*) FROM messages WHERE status = 'accepted';

-- Lifecycle ----------------------------------------------------------------------------------------------------

-- name: expired_messages
-- Accepted messages past their inbox expiry, oldest expiry first (housekeeping makes them undeliverable).
SELECT message_id, message_type, sender_party, recipient_party, workflow_id, total_chunks, content_encoding,
       meta, status, created_at, file_size, delivered_at, expires_at, acknowledged_at, status_at,
       linked_message_id
FROM messages WHERE status = 'accepted' AND expires_at <= ? ORDER BY expires_at LIMIT ?;

-- name: deactivated_messages
-- Accepted, unexpired messages waiting for a mailbox that has been deactivated.
SELECT m.message_id, m.message_type, m.sender_party, m.recipient_party, m.workflow_id, m.total_chunks,
       m.content_encoding, m.meta, m.status, m.created_at, m.file_size, m.delivered_at, m.expires_at,
       m.acknowledged_at, m.status_at, m.linked_message_id
FROM messages m JOIN mailboxes b ON b.mailbox_id = m.recipient
WHERE NOT b.active AND m.status = 'accepted' AND m.expires_at > ?
ORDER BY m.delivered_at LIMIT ?;

-- name: queue_mailbox_orphans
-- Queue the blobs of every message to or from one mailbox (sandbox reset of a mailbox).
INSERT INTO orphan_blobs (blob_key, since)
SELECT c.blob_key, ? FROM message_chunks c JOIN messages m ON m.message_id = c.message_id
WHERE (m.recipient = ? OR m.sender = ?) AND c.blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_mailbox_messages
-- Delete every message to or from one mailbox, with its chunks and events (sandbox reset).
DELETE FROM messages WHERE recipient = ? OR sender = ?;

-- name: queue_all_orphans
-- Queue every chunk's blob (sandbox reset of the whole store).
INSERT INTO orphan_blobs (blob_key, since) SELECT blob_key, ? FROM message_chunks WHERE blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_all_messages
-- Delete every message (sandbox reset of the whole store).
DELETE FROM messages;

-- Housekeeping leases (one node of many does the work a lease names) -------------------------------------------

-- name: claim_lease
-- Take or renew a named lease until a time: changes a row only when the lease is free, already this holder's,
-- or held by another past its time (the upsert's row lock makes one of racing claimers the winner).
INSERT INTO housekeeping_leases (lease_name, holder, held_until) VALUES (?, ?, ?)
ON CONFLICT (lease_name) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
WHERE housekeeping_leases.holder = excluded.holder OR housekeeping_leases.held_until <= ?;

-- name: release_lease
-- Give up a lease this holder has, so another node may take it at once (a shutting-down node).
DELETE FROM housekeeping_leases WHERE lease_name = ? AND holder = ?;

-- Idempotency keys (our extension: Idempotency-Key on the first POST of a send) --------------------------------

-- name: get_idempotency_key
-- The fingerprint and message of a key a sender gave before (a repeated first POST answers that message).
SELECT fingerprint, message_id FROM idempotency_keys WHERE sender = ? AND idempotency_key = ?;

-- name: claim_idempotency_key
-- Hold a sender's key for the message just inserted; changes no row when a send racing at another node holds it.
INSERT INTO idempotency_keys (sender, idempotency_key, fingerprint, message_id) VALUES (?, ?, ?, ?)
ON CONFLICT (sender, idempotency_key) DO NOTHING;

-- Web page sign-ins (broker/ui) --------------------------------------------------------------------------------

-- name: insert_web_session
-- A new web page session; its key is the SHA-256 of the cookie's token, never the token.
INSERT INTO web_sessions (session_key, user_id, mailbox_id, mailboxes, csrf_token, created_at, seen_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: get_web_session
-- One web page session by key (every page a signed-in person asks for).
SELECT session_key, user_id, mailbox_id, mailboxes, csrf_token, created_at, seen_at, expires_at
FROM web_sessions WHERE session_key = ?;

-- name: touch_web_session
-- When a session was last used: its idle expiry counts from here.
UPDATE web_sessions SET seen_at = ? WHERE session_key = ?;

-- name: switch_web_session_mailbox
-- The mailbox a session acts as now, one of those its sign-in may use.
UPDATE web_sessions SET mailbox_id = ? WHERE session_key = ?;

-- name: delete_web_session
-- Sign out: forget one session.
DELETE FROM web_sessions WHERE session_key = ?;

-- name: purge_web_sessions
-- Forget sessions past their absolute expiry or idle since before the cut-off.
DELETE FROM web_sessions WHERE expires_at <= ? OR seen_at < ?;

-- name: note_sign_in_failure
-- Count a failed sign-in against a mailbox or an address; a count with no failure since the cut-off restarts at one.
INSERT INTO web_sign_in_failures (failure_key, failures, last_failed_at) VALUES (?, 1, ?)
ON CONFLICT (failure_key) DO UPDATE SET
    failures = CASE WHEN web_sign_in_failures.last_failed_at < ? THEN 1 ELSE web_sign_in_failures.failures + 1 END,
    last_failed_at = excluded.last_failed_at;

-- name: sign_in_failures
-- The failed sign-ins counted against a mailbox or an address, and until when its sign-in is locked.
SELECT failures, locked_until FROM web_sign_in_failures WHERE failure_key = ?;

-- name: lock_sign_in
-- Refuse sign-in for a mailbox or an address until a time.
UPDATE web_sign_in_failures SET locked_until = ? WHERE failure_key = ?;

-- name: clear_sign_in_failures
-- Forget the failed sign-ins of a mailbox that has just signed in.
DELETE FROM web_sign_in_failures WHERE failure_key = ?;

-- name: purge_sign_in_failures
-- Forget failure counts with no failure since the cut-off whose lock, if any, has passed.
DELETE FROM web_sign_in_failures WHERE last_failed_at < ? AND (locked_until IS NULL OR locked_until <= ?);
