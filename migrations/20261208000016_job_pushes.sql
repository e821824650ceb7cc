-- The "pushed" mark leaves the job's row. Marking a job as handed to
-- Redis rewrote its whole row (none of the updates is heap-only), with
-- an entry in each of its indexes, a fourth version of the row between
-- its insert and its claim (docs/performance.md, "2026-12-08: fewer
-- writes per job"). A row of job_pushes says that the job's id is in
-- Redis, or on its way to a worker: the pump inserts it under its lock,
-- the claim deletes it, and the reconciler deletes those of lost ids
-- (and any whose job is no longer queued: cancelled while in Redis).
CREATE TABLE job_pushes (
    job_id uuid PRIMARY KEY,
    pushed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO job_pushes (job_id, pushed_at)
SELECT id, pushed_at FROM jobs WHERE status = 'queued' AND pushed_at IS NOT NULL;

DROP TRIGGER jobs_notify_requeue ON jobs;
DROP INDEX jobs_due;
DROP INDEX jobs_in_flight;
ALTER TABLE jobs DROP COLUMN pushed_at;

-- The pump's scan: due queued rows, best first; those whose id is in
-- Redis (at most the window) are skipped through job_pushes.
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at) WHERE status = 'queued';

-- Wake the pumps when a job becomes deliverable again (a retry, a lease
-- expired, a run given back); a push forgotten or handed back wakes them
-- from the statement that deletes it.
CREATE TRIGGER jobs_notify_requeue
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION copiste_notify_jobs();
