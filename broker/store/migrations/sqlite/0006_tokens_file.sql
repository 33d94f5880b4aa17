-- The replay cache moved to its own file (SqliteStore.use_token): one write per request no longer waits for
-- the main file's write lock. Its tokens were copied there when the store opened, before this ran.
DROP TABLE auth_tokens;
