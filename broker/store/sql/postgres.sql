-- Named queries of the production (PostgreSQL) metadata store. Each block starts with "-- name: <name>".

-- name: get_mailbox
SELECT mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
FROM mailboxes WHERE mailbox_id = $1;

-- name: put_mailbox
INSERT INTO mailboxes (mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
UPDATE mailboxes SET last_seen_at = $1, last_client = $2 WHERE mailbox_id = $3;

-- name: put_workflow
INSERT INTO workflows (workflow_id, restricted, patient_addressing) VALUES ($1, $2, $3)
ON CONFLICT (workflow_id) DO UPDATE SET
    restricted = excluded.restricted, patient_addressing = excluded.patient_addressing;

-- name: clear_workflow_members
DELETE FROM workflow_members WHERE workflow_id = $1;

-- name: add_workflow_member
INSERT INTO workflow_members (workflow_id, role, mailbox_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING;

-- name: get_workflow
SELECT workflow_id, restricted, patient_addressing FROM workflows WHERE workflow_id = $1;

-- name: list_workflows
SELECT workflow_id, restricted, patient_addressing FROM workflows ORDER BY workflow_id;

-- name: workflow_members
SELECT role, mailbox_id FROM workflow_members WHERE workflow_id = $1 ORDER BY mailbox_id;

-- name: receivers
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = $1 AND w.role = 'receiver' AND m.active
ORDER BY m.mailbox_id;

-- name: receivers_by_ods
SELECT m.mailbox_id, m.password, m.mailbox_name, m.ods_code, m.org_code, m.org_name, m.billing_entity, m.active
FROM workflow_members w JOIN mailboxes m ON m.mailbox_id = w.mailbox_id
WHERE w.workflow_id = $1 AND w.role = 'receiver' AND m.active AND upper(m.ods_code) = upper($2)
ORDER BY m.mailbox_id;

-- name: use_token
INSERT INTO auth_tokens (token_key, expires_at) VALUES ($1, $2) ON CONFLICT (token_key) DO NOTHING RETURNING 1;

-- name: purge_tokens
DELETE FROM auth_tokens WHERE expires_at < $1;

-- name: insert_message
INSERT INTO messages (
    message_id, message_type, sender, sender_party, recipient, recipient_party, workflow_id, total_chunks,
    content_encoding, meta, local_id, status, file_size, created_at, delivered_at, expires_at,
    acknowledged_at, status_at, linked_message_id)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, $16, $17, $18, $19);

-- name: insert_chunk
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data) VALUES ($1, $2, $3, $4, $5, $6);

-- name: insert_event
INSERT INTO message_events (message_id, seq, status, at, event, code, description, linked_message_id)
VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM message_events WHERE message_id = $1), $2, $3, $4, $5, $6, $7);

-- name: get_message
SELECT message_id, message_type, sender_party::text, recipient_party::text, workflow_id, total_chunks,
       content_encoding, meta::text, status, created_at, file_size, delivered_at, expires_at, acknowledged_at,
       status_at, linked_message_id
FROM messages WHERE message_id = $1;

-- name: get_events
SELECT status, at, event, code, description, linked_message_id
FROM message_events WHERE message_id = $1 ORDER BY seq;

-- name: get_chunk
SELECT blob_key, size, sha256, data FROM message_chunks WHERE message_id = $1 AND chunk_number = $2;

-- name: lock_message
SELECT status, total_chunks FROM messages WHERE message_id = $1 FOR UPDATE;

-- name: upsert_chunk
INSERT INTO message_chunks (message_id, chunk_number, blob_key, size, sha256, data) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (message_id, chunk_number) DO UPDATE SET
    blob_key = excluded.blob_key, size = excluded.size, sha256 = excluded.sha256, data = excluded.data;

-- name: chunk_totals
SELECT count(*), coalesce(sum(size), 0)::bigint FROM message_chunks WHERE message_id = $1;

-- name: set_file_size
UPDATE messages SET file_size = $1 WHERE message_id = $2;

-- name: deliver
UPDATE messages SET status = 'accepted', delivered_at = $1, expires_at = $2, file_size = $3, status_at = $1
WHERE message_id = $4 AND status = 'uploading';

-- name: acknowledge
UPDATE messages SET status = 'acknowledged', acknowledged_at = $1, status_at = $1
WHERE message_id = $2 AND status = 'accepted';

-- name: set_status
UPDATE messages SET status = $1, status_at = $2,
    acknowledged_at = CASE WHEN $1 = 'acknowledged' THEN $2 ELSE acknowledged_at END,
    delivered_at = CASE WHEN $1 = 'accepted' THEN coalesce(delivered_at, $2) ELSE delivered_at END
WHERE message_id = $3;

-- name: inbox_cursor
SELECT delivered_at, message_id FROM messages
WHERE recipient = $1 AND message_id = $2 AND delivered_at IS NOT NULL;

-- name: count_inbox
SELECT count(*) FROM messages WHERE recipient = $1 AND status = 'accepted';

-- name: count_accepted
SELECT count(*) FROM messages WHERE status = 'accepted';

-- name: find_by_local_id
SELECT message_id FROM messages WHERE sender = $1 AND local_id = $2 ORDER BY created_at DESC LIMIT $3;

-- name: queue_mailbox_orphans
INSERT INTO orphan_blobs (blob_key, since)
SELECT c.blob_key, $1 FROM message_chunks c JOIN messages m ON m.message_id = c.message_id
WHERE (m.recipient = $2 OR m.sender = $2) AND c.blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_mailbox_messages
DELETE FROM messages WHERE recipient = $1 OR sender = $1;

-- name: queue_all_orphans
INSERT INTO orphan_blobs (blob_key, since) SELECT blob_key, $1 FROM message_chunks WHERE blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_all_messages
DELETE FROM messages;

-- name: queue_orphan
INSERT INTO orphan_blobs (blob_key, since) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: take_orphans
DELETE FROM orphan_blobs WHERE blob_key IN (
    SELECT blob_key FROM orphan_blobs ORDER BY since LIMIT $1 FOR UPDATE SKIP LOCKED
) RETURNING blob_key;

-- name: put_patient
INSERT INTO patients (nhs_number, date_of_birth, family_name, gp_ods_code) VALUES ($1, $2, $3, $4)
ON CONFLICT (nhs_number) DO UPDATE SET
    date_of_birth = excluded.date_of_birth, family_name = excluded.family_name, gp_ods_code = excluded.gp_ods_code;

-- name: get_patient
SELECT nhs_number, date_of_birth, family_name, gp_ods_code FROM patients WHERE nhs_number = $1;

-- name: expired_messages
SELECT message_id, message_type, sender_party::text, recipient_party::text, workflow_id, total_chunks,
       content_encoding, meta::text, status, created_at, file_size, delivered_at, expires_at, acknowledged_at,
       status_at, linked_message_id
FROM messages WHERE status = 'accepted' AND expires_at <= $1 ORDER BY expires_at LIMIT $2;

-- name: deactivated_messages
SELECT m.message_id, m.message_type, m.sender_party::text, m.recipient_party::text, m.workflow_id, m.total_chunks,
       m.content_encoding, m.meta::text, m.status, m.created_at, m.file_size, m.delivered_at, m.expires_at,
       m.acknowledged_at, m.status_at, m.linked_message_id
FROM messages m JOIN mailboxes b ON b.mailbox_id = m.recipient
WHERE NOT b.active AND m.status = 'accepted' AND m.expires_at > $1
ORDER BY m.delivered_at LIMIT $2;

-- name: claim_accepted
SELECT message_id FROM messages WHERE message_id = ANY($1::text[]) AND status = 'accepted'
FOR UPDATE SKIP LOCKED;

-- name: claim_abandoned_uploads
SELECT message_id FROM messages WHERE status = 'uploading' AND created_at < $1 ORDER BY created_at LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: queue_message_orphans
INSERT INTO orphan_blobs (blob_key, since)
SELECT blob_key, $1 FROM message_chunks WHERE message_id = ANY($2::text[]) AND blob_key <> ''
ON CONFLICT DO NOTHING;

-- name: delete_message_chunks
DELETE FROM message_chunks WHERE message_id = ANY($1::text[]);

-- name: claim_retention_expired
SELECT message_id FROM messages WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED;

-- name: delete_messages
DELETE FROM messages WHERE message_id = ANY($1::text[]);

-- name: known_blob_keys
SELECT DISTINCT blob_key FROM message_chunks WHERE blob_key = ANY($1::text[]);
