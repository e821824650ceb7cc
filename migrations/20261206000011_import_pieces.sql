-- The pieces of format-2 (pieced) session exports already imported, so
-- that running `copiste import` again, after an interruption or a failed
-- piece, skips them without reading their scans or writing their rows.
--
-- A row is written in the same transaction as the piece's candidates and
-- copies: a piece is recorded if and only if its rows are committed. A
-- piece is identified by its file name within the export's `pieces/`
-- directory and the SHA-256 of its bytes: a piece whose content changed
-- is imported again and its row updated.
CREATE TABLE import_pieces (
    session_code text NOT NULL REFERENCES sessions (code),
    -- The file name, e.g. `0750001A.json`.
    piece text NOT NULL,
    -- SHA-256 of the file's bytes, lower-case hex.
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    candidates bigint NOT NULL CHECK (candidates >= 0),
    copies bigint NOT NULL CHECK (copies >= 0),
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_code, piece)
);
