-- Each chunk's SHA-256, computed while it streamed in and checked as it streams out ('' for rows from before).
ALTER TABLE message_chunks ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
