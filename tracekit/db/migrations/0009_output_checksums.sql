-- A committed file's checksum: the sha256 (hex) of its bytes as the worker wrote them. Nullable:
-- outputs committed before this column, and workers that do not send one, have none.
ALTER TABLE state.task_outputs
    ADD COLUMN sha256 text CONSTRAINT task_outputs_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$');
