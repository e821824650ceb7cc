-- Finished zips of an establishment's transmitted copies of an exam, one
-- per (exam, establishment, render options), written once the whole zip
-- is stored.
CREATE TABLE downloads (
    id uuid PRIMARY KEY,
    exam_code text NOT NULL REFERENCES exams (code),
    establishment_uai text NOT NULL REFERENCES establishments (uai),
    -- RenderOptions::tag(), e.g. "d1a1n1".
    options text NOT NULL CHECK (options ~ '^d[01]a[01]n[01]$'),
    -- [{"key": "...", "bytes": n, "sha256": "..."}], in order.
    parts jsonb NOT NULL,
    copies integer NOT NULL CHECK (copies >= 0),
    -- Copies left out (listed in errors.csv).
    errors integer NOT NULL CHECK (errors >= 0),
    job_id uuid REFERENCES jobs (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX downloads_lookup ON downloads (exam_code, establishment_uai, options, created_at DESC);
CREATE INDEX downloads_expiry ON downloads (expires_at);
