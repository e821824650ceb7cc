-- The jobs list reads pages by key, newest first: after the (created_at,
-- id) of the last row shown, never by OFFSET. Each filter has an index
-- that serves it in that order, so a page reads about as many index
-- entries as it shows, at any depth and whatever the ledger's size
-- (docs/performance.md, "Reads at national size"):
--
-- * no filter, or only the coordinator's scope: jobs_recent;
-- * a status: jobs_status_recent (also the per-status counts, capped);
-- * a kind: jobs_kind_recent;
-- * an exam, an establishment, an academy named by the payload: the
--   expression indexes, partial so that jobs whose payload names none
--   (no-op jobs, the sweeps, housekeeping) have no entry in them.
--
-- Each index costs one entry per row version that is not heap-only: an
-- insert, a claim and an outcome (a progress update changes no indexed
-- column and stays heap-only). Building them takes a share lock on jobs
-- (1.2 to 1.5 s for the 166 000 jobs of a national night, while
-- enqueues wait): migrate outside a night.
CREATE INDEX jobs_recent ON jobs (created_at, id);
CREATE INDEX jobs_status_recent ON jobs (status, created_at, id);
CREATE INDEX jobs_kind_recent ON jobs (kind, created_at, id);
CREATE INDEX jobs_exam_recent ON jobs ((payload->>'exam'), created_at, id)
    WHERE payload->>'exam' IS NOT NULL;
CREATE INDEX jobs_establishment_recent ON jobs ((payload->>'establishment'), created_at, id)
    WHERE payload->>'establishment' IS NOT NULL;
CREATE INDEX jobs_academy_recent ON jobs ((payload->>'academy'), created_at, id)
    WHERE payload->>'academy' IS NOT NULL;

-- Pruning a finished job sets the references to it to NULL: without these
-- indexes each deleted job scanned every closure unit and every download
-- (46 000 of each at national size), so that housekeeping's prune grew
-- with the square of the night.
CREATE INDEX closure_units_active_job ON closure_units (active_job_id)
    WHERE active_job_id IS NOT NULL;
CREATE INDEX downloads_job ON downloads (job_id) WHERE job_id IS NOT NULL;
