-- Closure: closure units (exam x establishment), the per-item export
-- ledger, and harmonisation passes.

-- One row per (exam, establishment) that a closure, relaunch or
-- harmonisation pass has touched; no row means "open". "published" is not
-- stored here: it is exams.published_at.
CREATE TABLE closure_units (
    exam_code text NOT NULL REFERENCES exams (code),
    establishment_uai text NOT NULL REFERENCES establishments (uai),
    state text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'closing', 'closed', 'partially_closed', 'closed_with_errors')),
    -- Bumped by every closure or relaunch enqueued for the unit; part of
    -- their idempotency keys, so that a double click is one job and a
    -- later relaunch is a new one.
    generation integer NOT NULL DEFAULT 0,
    -- The closure or relaunch job last enqueued for the unit, or the job
    -- running it now.
    active_job_id uuid REFERENCES jobs (id) ON DELETE SET NULL,
    -- Runs that finished (whatever their result).
    runs integer NOT NULL DEFAULT 0,
    closed_at timestamptz,
    -- Per-target counts and reasons of the last run (see closure::Summary).
    summary jsonb NOT NULL DEFAULT '{}',
    -- Whether the last run left failures that another attempt may fix
    -- (timeouts, 5xx), as opposed to rejections.
    retryable_errors boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exam_code, establishment_uai)
);
CREATE INDEX closure_units_state ON closure_units (state, updated_at);

-- Harmonised exams: each validation by the academic coordinator is a pass.
CREATE TABLE harmonisation_passes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_code text NOT NULL REFERENCES exams (code),
    -- NULL: every academy of the exam.
    academy_code text REFERENCES academies (code),
    -- Copies this pass validated for the first time.
    copies integer NOT NULL CHECK (copies >= 0),
    created_by text NOT NULL CHECK (created_by <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A copy of a harmonised exam is exported once a pass has validated it.
ALTER TABLE copies ADD COLUMN validated_pass bigint REFERENCES harmonisation_passes (id);
CREATE INDEX copies_validated_pass ON copies (validated_pass) WHERE validated_pass IS NOT NULL;

-- The per-item export ledger. Cyclades items are copies (their grade);
-- Imag'In items are graders (their count of corrected copies in the unit).
-- `key` is what the target deduplicates on: stable for one item and one
-- content version (copy version, or count revision).
CREATE TABLE export_items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target text NOT NULL CHECK (target IN ('cyclades', 'imagin')),
    exam_code text NOT NULL,
    establishment_uai text NOT NULL,
    copy_id bigint REFERENCES copies (id),
    grader_code text REFERENCES graders (code),
    -- Copy version (cyclades) or count revision (imagin) of `document`.
    revision integer NOT NULL CHECK (revision > 0),
    key text NOT NULL UNIQUE,
    -- The item as sent, without its key.
    document jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'accepted', 'rejected')),
    -- Why the target rejected the item.
    reason text,
    attempts integer NOT NULL DEFAULT 0,
    -- The last failure to get an answer (timeout, 5xx…); the item stays
    -- pending and is sent again.
    last_error text,
    sent_at timestamptz,
    accepted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (exam_code, establishment_uai) REFERENCES closure_units (exam_code, establishment_uai),
    CHECK ((target = 'cyclades') = (copy_id IS NOT NULL)),
    CHECK ((target = 'imagin') = (grader_code IS NOT NULL)),
    CHECK ((state = 'rejected') = (reason IS NOT NULL))
-- Room on each page for the two updates every item gets (sent, then
-- settled): no indexed column changes, so they stay heap-only (HOT).
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX export_items_copy ON export_items (target, copy_id)
    WHERE copy_id IS NOT NULL;
CREATE UNIQUE INDEX export_items_grader ON export_items (target, exam_code, establishment_uai, grader_code)
    WHERE grader_code IS NOT NULL;
CREATE INDEX export_items_unit ON export_items (exam_code, establishment_uai, target, id);
