-- Fewer index entries per job: every status change of a job rewrites its
-- row, and each index holding the row gets a new entry.
--
-- The idempotency index holds only jobs that have a key (most run
-- deliveries have none).
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing by status and kind does not need an entry per row version of
-- every finished job: active jobs are found through this partial index,
-- finished ones through jobs_finished or a scan (operators' listings).
DROP INDEX jobs_listing;
CREATE INDEX jobs_active ON jobs (kind, created_at DESC)
    WHERE status IN ('queued', 'running');
