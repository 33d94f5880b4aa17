-- How many events each message has, kept on its row: the next event's seq is event_count + 1 (PostgreSQL's
-- migration says why a counter and not MAX(seq) + 1: the single writer makes both safe here, and the column is
-- kept alike in both dialects so the plans and the schema test see one shape).
ALTER TABLE messages ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET event_count = (SELECT coalesce(max(seq), 0) FROM message_events e WHERE e.message_id = messages.message_id);
