//! Access tokens: rows of `access_tokens`, the secret stored as a hash.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, types::decode_uai};
use crate::domain::Uai;

/// Whom a token acts as, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRole {
    Admin,
    Coordinator { academy: String },
    Establishment { uai: Uai },
}

/// A token as stored (its secret's hash, never the secret).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub role: TokenRole,
    pub secret_sha256: Vec<u8>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

struct Stored {
    id: Uuid,
    name: String,
    role: String,
    academy_code: Option<String>,
    establishment_uai: Option<String>,
    secret_sha256: Vec<u8>,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<Stored> for TokenRow {
    type Error = anyhow::Error;

    fn try_from(r: Stored) -> anyhow::Result<Self> {
        let role = match (r.role.as_str(), r.academy_code, r.establishment_uai) {
            ("admin", None, None) => TokenRole::Admin,
            ("coordinator", Some(academy), None) => TokenRole::Coordinator { academy },
            ("establishment", None, Some(uai)) => TokenRole::Establishment {
                uai: decode_uai("access_tokens.establishment_uai", &uai)?,
            },
            (role, ..) => anyhow::bail!(super::types::Undecodable {
                column: "access_tokens.role".into(),
                what: "unknown value",
                value: role.to_owned(),
                reason: Some("or its academy/establishment does not match it".into()),
            }),
        };
        Ok(Self {
            id: r.id,
            name: r.name,
            role,
            secret_sha256: r.secret_sha256,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// A token to store.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub role: &'a TokenRole,
    pub secret_sha256: &'a [u8],
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a token.
pub async fn insert(db: &Db, t: NewToken<'_>) -> anyhow::Result<()> {
    let (role, academy, uai) = match t.role {
        TokenRole::Admin => ("admin", None, None),
        TokenRole::Coordinator { academy } => ("coordinator", Some(academy.as_str()), None),
        TokenRole::Establishment { uai } => ("establishment", None, Some(uai.as_str())),
    };
    sqlx::query!(
        "INSERT INTO access_tokens
             (id, name, role, academy_code, establishment_uai, secret_sha256, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        t.id,
        t.name,
        role,
        academy,
        uai,
        t.secret_sha256,
        t.created_by,
        t.expires_at
    )
    .execute(&db.pool)
    .await
    .context("storing the access token")?;
    Ok(())
}

/// One token, or `None`.
pub async fn get(db: &Db, id: Uuid) -> anyhow::Result<Option<TokenRow>> {
    let row = sqlx::query_as!(
        Stored,
        "SELECT id, name, role, academy_code, establishment_uai, secret_sha256, created_by,
                created_at, expires_at, revoked_at
         FROM access_tokens WHERE id = $1",
        id
    )
    .fetch_optional(&db.pool)
    .await
    .context("reading the access token")?;
    row.map(TokenRow::try_from).transpose()
}

/// Every token, newest first.
pub async fn list(db: &Db) -> anyhow::Result<Vec<TokenRow>> {
    sqlx::query_as!(
        Stored,
        "SELECT id, name, role, academy_code, establishment_uai, secret_sha256, created_by,
                created_at, expires_at, revoked_at
         FROM access_tokens ORDER BY created_at DESC, id"
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the access tokens")?
    .into_iter()
    .map(TokenRow::try_from)
    .collect()
}

/// Revokes a token; `None` if there is no such token, else whether it was
/// active until now.
pub async fn revoke(db: &Db, id: Uuid) -> anyhow::Result<Option<bool>> {
    let row = sqlx::query!(
        r#"WITH target AS (SELECT id, revoked_at FROM access_tokens WHERE id = $1 FOR UPDATE),
                done AS (UPDATE access_tokens t SET revoked_at = now()
                         FROM target WHERE t.id = target.id AND target.revoked_at IS NULL
                         RETURNING t.id)
           SELECT (SELECT count(*) FROM done) AS "revoked!" FROM target"#,
        id
    )
    .fetch_optional(&db.pool)
    .await
    .context("revoking the access token")?;
    Ok(row.map(|r| r.revoked > 0))
}

/// Stores a session of token `token` until `expires_at`.
pub async fn insert_session(
    db: &Db,
    id_sha256: &[u8],
    token: Uuid,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO web_sessions (id_sha256, token_id, expires_at) VALUES ($1, $2, $3)",
        id_sha256,
        token,
        expires_at
    )
    .execute(&db.pool)
    .await
    .context("storing the session")?;
    Ok(())
}

/// The token of an unexpired session, or `None`.
pub async fn session_token(db: &Db, id_sha256: &[u8]) -> anyhow::Result<Option<TokenRow>> {
    let row = sqlx::query_as!(
        Stored,
        "SELECT t.id, t.name, t.role, t.academy_code, t.establishment_uai, t.secret_sha256,
                t.created_by, t.created_at, t.expires_at, t.revoked_at
         FROM web_sessions s JOIN access_tokens t ON t.id = s.token_id
         WHERE s.id_sha256 = $1 AND s.expires_at > now()",
        id_sha256
    )
    .fetch_optional(&db.pool)
    .await
    .context("reading the session")?;
    row.map(TokenRow::try_from).transpose()
}

/// Ends a session (logout), and every expired one.
pub async fn delete_session(db: &Db, id_sha256: &[u8]) -> anyhow::Result<()> {
    sqlx::query!(
        "DELETE FROM web_sessions WHERE id_sha256 = $1 OR expires_at <= now()",
        id_sha256
    )
    .execute(&db.pool)
    .await
    .context("ending the session")?;
    Ok(())
}
