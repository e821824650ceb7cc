-- Access tokens ("clés d'accès") of the HTTP API and the web pages. Only a
-- hash of each token's secret is stored: the token itself is printed once,
-- when it is made. A token acts as one actor: admin, the coordinator of one
-- academy, or one establishment.
CREATE TABLE access_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    role text NOT NULL CHECK (role IN ('admin', 'coordinator', 'establishment')),
    academy_code text REFERENCES academies (code),
    establishment_uai text REFERENCES establishments (uai),
    -- SHA-256 of the secret part of the token.
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    CHECK (
        (role = 'admin' AND academy_code IS NULL AND establishment_uai IS NULL)
        OR (role = 'coordinator' AND academy_code IS NOT NULL AND establishment_uai IS NULL)
        OR (role = 'establishment' AND establishment_uai IS NOT NULL AND academy_code IS NULL)
    )
);

-- Sessions of the web pages: a browser logs in with a token and gets a
-- session cookie; only the SHA-256 of the cookie's value is stored. A
-- session lives as long as its token does (revoking the token ends it).
CREATE TABLE web_sessions (
    id_sha256 bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    token_id uuid NOT NULL REFERENCES access_tokens (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX web_sessions_token ON web_sessions (token_id);
