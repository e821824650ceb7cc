-- The jobs list's indexes hold finished jobs only. A job's row is
-- written four times (inserted, marked pushed, claimed, finished) and
-- none of these updates is heap-only, so every index on `jobs` got an
-- entry for each of the four versions, even those whose key never
-- changes (creation time, kind, the payload's exam): the six listing
-- indexes of migration 13 were about a third of PostgreSQL's work per
-- job (docs/performance.md, "2026-12-08: fewer writes per job"). A
-- finished job's row is not rewritten by the night (only a retry by
-- hand rewrites it), so restricted to the finished statuses each holds
-- one entry per job.
--
-- Building them takes a share lock on jobs (2.9 s on a ledger of 212 200
-- jobs, while enqueues wait): migrate outside a night.
--
-- The jobs still queued or running (a night's backlog at most) are
-- listed through `jobs_active_recent`, newest first; the list reads the
-- two halves, each in order, and merges them (db::jobs::list_page).
DROP INDEX jobs_recent;
DROP INDEX jobs_status_recent;
DROP INDEX jobs_kind_recent;
DROP INDEX jobs_exam_recent;
DROP INDEX jobs_establishment_recent;
DROP INDEX jobs_academy_recent;

CREATE INDEX jobs_done_recent ON jobs (created_at, id)
    WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX jobs_done_status_recent ON jobs (status, created_at, id)
    WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX jobs_done_kind_recent ON jobs (kind, created_at, id)
    WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX jobs_done_exam_recent ON jobs ((payload->>'exam'), created_at, id)
    WHERE payload->>'exam' IS NOT NULL
      AND status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX jobs_done_establishment_recent ON jobs ((payload->>'establishment'), created_at, id)
    WHERE payload->>'establishment' IS NOT NULL
      AND status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX jobs_done_academy_recent ON jobs ((payload->>'academy'), created_at, id)
    WHERE payload->>'academy' IS NOT NULL
      AND status IN ('succeeded', 'failed', 'dead', 'cancelled');

CREATE INDEX jobs_active_recent ON jobs (created_at, id)
    WHERE status IN ('queued', 'running');
-- An exam's or an establishment's active jobs, newest first: a page
-- filtered by either reads its own entries, not the whole backlog (46 000
-- zips queued at once: 15 to 21 ms a page without them). No-op jobs and
-- the sweeps name neither and have no entry.
CREATE INDEX jobs_active_exam_recent ON jobs ((payload->>'exam'), created_at, id)
    WHERE payload->>'exam' IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX jobs_active_establishment_recent ON jobs ((payload->>'establishment'), created_at, id)
    WHERE payload->>'establishment' IS NOT NULL AND status IN ('queued', 'running');

-- What the planner knows of the payload's exam and establishment, which
-- the partial indexes above do not give it: without these statistics it
-- took an establishment for 180 of the 46 000 active jobs instead of 10,
-- and looked for the job that replaced a dead one through its exam's
-- whole backlog (82 ms instead of 4 for a page of 50 dead jobs).
CREATE STATISTICS jobs_payload_units ON (payload->>'exam'), (payload->>'establishment') FROM jobs;
