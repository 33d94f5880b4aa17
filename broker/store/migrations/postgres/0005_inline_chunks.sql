-- Small chunks kept in their row (MESH_INLINE_CHUNK_BYTES): their bytes, with blob_key '' (no blob).
-- A small message then costs one metadata write and no blob-store round trip.
ALTER TABLE message_chunks ADD COLUMN data bytea;
-- Out of line once large, but never compressed: payloads are often gzip already, and compressing each insert
-- would spend CPU for nothing.
ALTER TABLE message_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
