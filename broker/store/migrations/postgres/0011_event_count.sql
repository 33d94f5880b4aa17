-- How many events each message has, kept on its row: the next event's seq is event_count + 1, taken by the same
-- UPDATE that changes the message (or by the INSERT that creates it). An UPDATE that waited for another writer's
-- row lock re-reads the row it then changes, so two writers of one message number their events in turn, even
-- when each is a single statement whose snapshot was taken before the wait (a MAX(seq) + 1 subquery in such a
-- statement reads that older snapshot, and two writers could take the same number).
ALTER TABLE messages ADD COLUMN event_count integer NOT NULL DEFAULT 0;
UPDATE messages SET event_count = (SELECT coalesce(max(seq), 0) FROM message_events e WHERE e.message_id = messages.message_id);
