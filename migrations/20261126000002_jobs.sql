-- The job ledger. Postgres is the system of record: a job exists when its
-- row exists; Redis only carries job ids to workers.

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    -- The job type's stable `NAME` (never a Rust type path).
    kind text NOT NULL CHECK (kind <> ''),
    payload jsonb NOT NULL DEFAULT '{}',
    -- queued: waiting for delivery (first run or a scheduled retry);
    -- running: claimed by `worker` until `lease_until`;
    -- succeeded: done; failed: done with a partial or failed result;
    -- dead: permanent error or attempts exhausted; cancelled: by hand.
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    -- Higher runs first.
    priority smallint NOT NULL DEFAULT 0,
    -- Claims so far, crashed ones included.
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts > 0),
    -- Not deliverable before this instant (backoff of retries).
    run_at timestamptz NOT NULL DEFAULT now(),
    -- When the pump last handed the id to Redis; NULL while not in Redis.
    pushed_at timestamptz,
    lease_until timestamptz,
    worker text,
    progress_done bigint,
    progress_total bigint,
    result jsonb,
    last_error text,
    idempotency_key text UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    CHECK (status <> 'running' OR (lease_until IS NOT NULL AND worker IS NOT NULL))
);

-- The pump's scan: due rows not yet in Redis, best first.
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at)
    WHERE status = 'queued' AND pushed_at IS NULL;
-- The window count and the reconciler's scan of ids Redis may have lost.
CREATE INDEX jobs_in_flight ON jobs (pushed_at)
    WHERE status = 'queued' AND pushed_at IS NOT NULL;
-- The reconciler's scan of expired leases.
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_listing ON jobs (status, kind, created_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- The history of every job: one row per transition.
CREATE TABLE job_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    -- enqueued, started, succeeded, failed, retry_scheduled, dead, released,
    -- lease_expired, retried_by_hand, cancelled
    event text NOT NULL,
    attempt integer NOT NULL,
    worker text,
    detail text
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Wake the pumps (LISTEN copiste_jobs) as soon as a job becomes deliverable,
-- so that pick-up does not wait for the next poll. Notifications are sent
-- on commit and deduplicated within a transaction.
CREATE FUNCTION copiste_notify_jobs() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('copiste_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert
    AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION copiste_notify_jobs();

CREATE TRIGGER jobs_notify_requeue
    AFTER UPDATE OF status, pushed_at ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND NEW.pushed_at IS NULL AND NEW.run_at <= now())
    EXECUTE FUNCTION copiste_notify_jobs();
