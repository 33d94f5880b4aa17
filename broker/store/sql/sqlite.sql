-- Named queries of the embedded (SQLite) metadata store. Each block starts with "-- name: <name>".

-- name: get_mailbox
SELECT mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
FROM mailboxes WHERE mailbox_id = ?;

-- name: put_mailbox
INSERT INTO mailboxes (mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (mailbox_id) DO UPDATE SET
    password = excluded.password, mailbox_name = excluded.mailbox_name, ods_code = excluded.ods_code,
    org_code = excluded.org_code, org_name = excluded.org_name, billing_entity = excluded.billing_entity,
    active = excluded.active;

-- name: list_mailboxes
SELECT mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
FROM mailboxes ORDER BY mailbox_id;

-- name: count_mailboxes
SELECT count(*) FROM mailboxes;

-- name: record_handshake
UPDATE mailboxes SET last_seen_at = ?, last_client = ? WHERE mailbox_id = ?;

-- name: put_workflow
INSERT INTO workflows (workflow_id, restricted, patient_addressing) VALUES (?, ?, ?)
ON CONFLICT (workflow_id) DO UPDATE SET
    restricted = excluded.restricted, patient_addressing = excluded.patient_addressing;

-- name: clear_workflow_members
DELETE FROM workflow_members WHERE workflow_id = ?;

-- name: add_workflow_member
INSERT OR IGNORE INTO workflow_members (workflow_id, role, mailbox_id) VALUES (?, ?, ?);

-- name: get_workflow
SELECT workflow_id, restricted, patient_addressing FROM workflows WHERE workflow_id = ?;

-- name: list_workflows
SELECT workflow_id, restricted, patient_addressing FROM workflows ORDER BY workflow_id;

-- name: workflow_members
SELECT role, mailbox_id FROM workflow_members WHERE workflow_id = ? ORDER BY mailbox_id;

-- name: receivers
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = ? AND w.role = 'receiver' AND m.active = 1
ORDER BY m.mailbox_id;

-- name: receivers_by_ods
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = ? AND w.role = 'receiver' AND m.active = 1 AND upper(m.ods_code) = upper(?)
ORDER BY m.mailbox_id;

-- name: use_token
INSERT INTO auth_tokens (token_key, expires_at) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING;

-- name: purge_tokens
DELETE FROM auth_tokens WHERE expires_at < ?;

-- name: insert_message
INSERT INTO messages (
    message_id, message_type, sender, sender_party, recipient, recipient_party, workflow_id, total_chunks,
    content_encoding, meta, local_id, status, file_size, created_at, delivered_at, expires_at,
    acknowledged_at, status_at, linked_message_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_chunk
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data) VALUES (?, ?, ?, ?, ?, ?);

-- name: insert_event
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM message_events WHERE message_id = ?), ?, ?, ?, ?, ?, ?);

-- name: get_message
SELECT message_id, message_type, sender_party, recipient_party, workflow_id, total_chunks, content_encoding,
       meta, status, created_at, file_size, delivered_at, expires_at, acknowledged_at, status_at,
       linked_message_id
FROM messages WHERE message_id = ?;

-- name: get_events
SELECT status, at, event, code, description, linked_message_id
FROM message_events WHERE message_id = ? ORDER BY seq;

-- name: get_chunk
SELECT blob_key, size, sha256, data FROM message_chunks WHERE message_id = ? AND chunk_number = ?;

-- name: message_status
SELECT status, total_chunks FROM messages WHERE message_id = ?;

-- name: upsert_chunk
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (message_id, chunk_number) DO UPDATE SET
    blob_key = excluded.blob_key, size = excluded.size, sha256 = excluded.sha256, data = excluded.data;

-- name: chunk_totals
SELECT count(*), coalesce(sum(size), 0) FROM message_chunks WHERE message_id = ?;

-- name: set_file_size
UPDATE messages SET file_size = ? WHERE message_id = ?;

-- name: deliver
UPDATE messages SET status = 'accepted', delivered_at = ?, expires_at = ?, file_size = ?, status_at = ?
WHERE message_id = ? AND status = 'uploading';

-- name: acknowledge
UPDATE messages SET status = 'acknowledged', acknowledged_at = ?, status_at = ?
WHERE message_id = ? AND status = 'accepted';

-- name: set_status
UPDATE messages SET status = :status, status_at = :at,
    acknowledged_at = CASE WHEN :status = 'acknowledged' THEN :at ELSE acknowledged_at END,
    delivered_at = CASE WHEN :status = 'accepted' THEN coalesce(delivered_at, :at) ELSE delivered_at END
WHERE message_id = :message_id;

-- name: inbox_cursor
SELECT delivered_at, message_id FROM messages
WHERE recipient = ? AND message_id = ? AND delivered_at IS NOT NULL;

-- name: count_inbox
SELECT count(*) FROM messages WHERE recipient = ? AND status = 'accepted';

-- name: count_accepted
SELECT count(*) FROM messages WHERE status = 'accepted';

-- name: find_by_local_id
SELECT message_id FROM messages WHERE sender = ? AND local_id = ? ORDER BY created_at DESC LIMIT ?;

-- name: queue_mailbox_orphans
INSERT OR IGNORE INTO orphan_blobs (blob_key, since)
SELECT c.blob_key, ? FROM message_chunks c JOIN messages m ON m.message_id = c.message_id
WHERE (m.recipient = ? OR m.sender = ?) AND c.blob_key <> '';

-- name: delete_mailbox_messages
DELETE FROM messages WHERE recipient = ? OR sender = ?;

-- name: queue_all_orphans
INSERT OR IGNORE INTO orphan_blobs (blob_key, since) SELECT blob_key, ? FROM message_chunks WHERE blob_key <> '';

-- name: delete_all_messages
DELETE FROM messages;

-- name: queue_orphan
INSERT OR IGNORE INTO orphan_blobs (blob_key, since) VALUES (?, ?);

-- name: take_orphans
DELETE FROM orphan_blobs WHERE blob_key IN (SELECT blob_key FROM orphan_blobs ORDER BY since LIMIT ?)
RETURNING blob_key;

-- name: put_patient
INSERT INTO patients (nhs_number, date_of_birth, family_name, gp_ods_code) VALUES (?, ?, ?, ?)
ON CONFLICT (nhs_number) DO UPDATE SET
    date_of_birth = excluded.date_of_birth, family_name = excluded.family_name, gp_ods_code = excluded.gp_ods_code;

-- name: get_patient
SELECT nhs_number, date_of_birth, family_name, gp_ods_code FROM patients WHERE nhs_number = ?;

-- name: expired_messages
SELECT message_id, message_type, sender_party, recipient_party, workflow_id, total_chunks, content_encoding,
       meta, status, created_at, file_size, delivered_at, expires_at, acknowledged_at, status_at,
       linked_message_id
FROM messages WHERE status = 'accepted' AND expires_at <= ? ORDER BY expires_at LIMIT ?;

-- name: deactivated_messages
SELECT m.message_id, m.message_type, m.sender_party, m.recipient_party, m.workflow_id, m.total_chunks,
       m.content_encoding, m.meta, m.status, m.created_at, m.file_size, m.delivered_at, m.expires_at,
       m.acknowledged_at, m.status_at, m.linked_message_id
FROM messages m JOIN mailboxes b ON b.mailbox_id = m.recipient
WHERE b.active = 0 AND m.status = 'accepted' AND m.expires_at > ?
ORDER BY m.delivered_at LIMIT ?;

-- name: still_accepted
SELECT message_id FROM messages WHERE message_id IN (SELECT value FROM json_each(?)) AND status = 'accepted';

-- name: abandoned_uploads
SELECT message_id FROM messages WHERE status = 'uploading' AND created_at < ? ORDER BY created_at LIMIT ?;

-- name: queue_message_orphans
INSERT OR IGNORE INTO orphan_blobs (blob_key, since)
SELECT blob_key, ? FROM message_chunks WHERE message_id IN (SELECT value FROM json_each(?)) AND blob_key <> '';

-- name: delete_message_chunks
DELETE FROM message_chunks WHERE message_id IN (SELECT value FROM json_each(?));

-- name: retention_expired
SELECT message_id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?;

-- name: delete_messages
DELETE FROM messages WHERE message_id IN (SELECT value FROM json_each(?));

-- name: known_blob_keys
SELECT blob_key FROM message_chunks WHERE blob_key IN (SELECT value FROM json_each(?));
