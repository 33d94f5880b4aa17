-- The Idempotency-Key a sender may give on the first POST of a send (our extension, docs/api.md): the key, a
-- fingerprint of that send's headers and the message it created. The row lives exactly as long as its message
-- (ON DELETE CASCADE: the retention purge takes both), and is written in the message's own transaction, so of two
-- nodes racing with one key the second's insert waits for the first's commit and then finds the key taken.
CREATE TABLE idempotency_keys (
    sender          text NOT NULL,
    idempotency_key text NOT NULL,
    fingerprint     text NOT NULL,
    message_id      text NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    PRIMARY KEY (sender, idempotency_key)
);
-- The cascade finds a deleted message's key by message ID (without it, each purged message would scan the table).
CREATE INDEX idempotency_keys_message ON idempotency_keys (message_id);

-- The long-poll inbox (GET .../inbox?wait=N, our extension): every node LISTENs on mesh_inbox (broker/store/
-- pg_arrivals.py) and wakes the requests waiting on a mailbox when a message enters its inbox, whichever node (or
-- housekeeping's report) put it there. The payload is the recipient; NOTIFY is sent at commit, repeats within a
-- transaction folded into one.
CREATE FUNCTION mesh_inbox_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mesh_inbox', NEW.recipient);
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_inbox_arrival_insert
    AFTER INSERT ON messages FOR EACH ROW WHEN (NEW.status = 'accepted')
    EXECUTE FUNCTION mesh_inbox_arrival();

CREATE TRIGGER messages_inbox_arrival_update
    AFTER UPDATE OF status ON messages FOR EACH ROW WHEN (NEW.status = 'accepted' AND OLD.status <> 'accepted')
    EXECUTE FUNCTION mesh_inbox_arrival();
