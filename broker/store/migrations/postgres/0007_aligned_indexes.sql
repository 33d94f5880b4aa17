-- The two dialects' indexes made the same (tests/contract/test_schema.py compares them). messages_recipient
-- duplicated the leading column of messages_rich_inbox (recipient, created_at, message_id), which serves every
-- query it served, so it only cost a write per message.
DROP INDEX IF EXISTS messages_recipient;
