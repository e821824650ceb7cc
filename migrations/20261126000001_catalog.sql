-- The exam catalogue: academies, establishments, sessions, exams, graders,
-- candidates and their copies, as loaded by `copiste import`.

-- Name search is accent- and case-insensitive ("helene" finds "Hélène").
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- `unaccent(text)` is only STABLE (it depends on the search path), so it
-- cannot back an index. This wrapper names its dictionary explicitly and is
-- therefore safe to declare IMMUTABLE.
CREATE FUNCTION copiste_fold(input text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, input)) $$;

CREATE TABLE academies (
    code text PRIMARY KEY CHECK (code <> ''),
    name text NOT NULL CHECK (name <> '')
);

CREATE TABLE establishments (
    -- UAI: 7 digits and a check letter (mod 23 over A..Z without I, O, Q).
    -- The check letter itself is verified by `Uai::parse` before insertion;
    -- the constraint keeps the shape honest for any other writer.
    uai text PRIMARY KEY CHECK (uai ~ '^[0-9]{7}[A-HJ-NPR-Z]$'),
    name text NOT NULL CHECK (name <> ''),
    academy_code text NOT NULL REFERENCES academies (code),
    abroad boolean NOT NULL DEFAULT false
);
CREATE INDEX establishments_academy ON establishments (academy_code);

CREATE TABLE sessions (
    code text PRIMARY KEY CHECK (code <> ''),
    name text NOT NULL CHECK (name <> ''),
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE exams (
    code text PRIMARY KEY CHECK (code <> ''),
    session_code text NOT NULL REFERENCES sessions (code),
    subject text NOT NULL CHECK (subject <> ''),
    kind text NOT NULL CHECK (kind IN ('ponctuel', 'harmonised', 'e3c')),
    -- Set when Cyclades has published the results; after it a closure can
    -- no longer be relaunched.
    published_at timestamptz,
    published_by text
);
CREATE INDEX exams_session ON exams (session_code);

CREATE TABLE graders (
    code text PRIMARY KEY CHECK (code <> ''),
    nom text NOT NULL,
    prenom text NOT NULL,
    academy_code text NOT NULL REFERENCES academies (code)
);

CREATE TABLE candidates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_code text NOT NULL REFERENCES sessions (code),
    -- The candidate number is an opaque string, unique within a session.
    numero text NOT NULL CHECK (numero <> ''),
    nom text NOT NULL CHECK (nom <> ''),
    prenom text NOT NULL,
    establishment_uai text NOT NULL REFERENCES establishments (uai),
    UNIQUE (session_code, numero)
);
CREATE INDEX candidates_establishment ON candidates (establishment_uai);
CREATE INDEX candidates_search ON candidates
    USING gin (copiste_fold(nom || ' ' || prenom || ' ' || numero) gin_trgm_ops);

CREATE TABLE copies (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_code text NOT NULL REFERENCES exams (code),
    candidate_id bigint NOT NULL REFERENCES candidates (id),
    grader_code text REFERENCES graders (code),
    absent boolean NOT NULL DEFAULT false,
    -- NULL and not absent: not graded yet.
    grade numeric(5, 2) CHECK (grade >= 0),
    -- [{"question": "1a", "mark": 2.5, "max": 4}, ...]
    grading_details jsonb NOT NULL DEFAULT '[]',
    appreciation text,
    -- [{"page": 1, "x": 0.42, "y": 0.18, "kind": "mark"|"comment", "text": "..."}, ...]
    annotations jsonb NOT NULL DEFAULT '[]',
    -- Object-store keys of the scanned pages, in page order.
    page_keys text[] NOT NULL,
    -- SHA-256 of everything above; a change bumps `version`.
    content_sha256 text NOT NULL,
    version integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (exam_code, candidate_id),
    CHECK (NOT (absent AND grade IS NOT NULL))
);
CREATE INDEX copies_candidate ON copies (candidate_id);
