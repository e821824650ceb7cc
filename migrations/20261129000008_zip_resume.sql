-- Issue 18: a job resumes where a killed or failed run stopped, and a run
-- that moved the job forward does not use up its attempts.

ALTER TABLE jobs
    -- What the job's kind records to continue where a run stopped, in its
    -- own format (for `bulk-render`: the zip parts staged so far). Written
    -- by the running attempt only (fenced by worker and attempt).
    ADD COLUMN checkpoint jsonb,
    -- The most units of work (e.g. staged parts) a checkpoint of the job
    -- has ever recorded: a checkpoint moves the job forward when it
    -- records more.
    ADD COLUMN checkpoint_units bigint NOT NULL DEFAULT 0,
    -- Attempts that moved the job forward: they are not counted against
    -- `max_attempts` (`attempts - advanced_attempts` is what counts).
    ADD COLUMN advanced_attempts integer NOT NULL DEFAULT 0
        CHECK (advanced_attempts >= 0),
    -- The last attempt that moved the job forward (counted once).
    ADD COLUMN advanced_attempt integer;
