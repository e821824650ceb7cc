//! Access tokens ("clés d'accès"): who the HTTP API and the web pages act
//! for. A token is `cps_<id>_<secret>`; only the SHA-256 of the secret is
//! stored, the token is shown once when made, and the secret is compared
//! in constant time. A revoked or expired token is refused like an
//! unknown one.

use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::{
    app::App,
    db::{
        self,
        access::{NewToken, TokenRole, TokenRow},
    },
    domain::Uai,
    op::{Actor, OpError},
};

/// What every token starts with (it tells a leaked secret apart).
const PREFIX: &str = "cps_";
/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;
/// The longest lifetime a token may be given.
pub const MAX_LIFETIME: chrono::Duration = chrono::Duration::days(3650);

/// Whom a new token acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Coordinator { academy: String },
    Establishment { uai: Uai },
}

/// A token to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInput {
    pub role: Role,
    /// Who or what holds it ("Lycée Hoche, secrétariat d'examens").
    pub name: String,
    /// How long it is valid; forever when `None`.
    pub lifetime: Option<chrono::Duration>,
}

/// A token just made: `token` is shown once and never again.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub id: Uuid,
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as listed (without its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub scope: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenInfo {
    fn from(t: TokenRow) -> Self {
        let (role, scope) = match t.role {
            TokenRole::Admin => ("admin", None),
            TokenRole::Coordinator { academy } => ("coordinator", Some(academy)),
            TokenRole::Establishment { uai } => ("establishment", Some(uai.to_string())),
        };
        Self {
            id: t.id,
            name: t.name,
            role: role.to_owned(),
            scope,
            created_by: t.created_by,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Parses a lifetime such as `90d`, `12h`, `30m` (days, hours, minutes).
pub fn parse_lifetime(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a lifetime such as 90d, 12h or 30m"))?;
    let d = match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a lifetime such as 90d, 12h or 30m"))?;
    if d <= chrono::Duration::zero() || d > MAX_LIFETIME {
        return Err(format!("{s:?}: a lifetime is 1 minute to 3650 days"));
    }
    Ok(d)
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a token (admin only) and returns it, to be shown once.
pub async fn create_token(app: &App, actor: &Actor, input: &TokenInput) -> Result<Issued, OpError> {
    actor.require_admin("make access tokens")?;
    let name = crate::op::code("name", &input.name)?;
    if let Some(l) = input.lifetime
        && (l <= chrono::Duration::zero() || l > MAX_LIFETIME)
    {
        return Err(OpError::invalid("expires_in", "1 minute to 3650 days"));
    }
    let role = match &input.role {
        Role::Admin => TokenRole::Admin,
        Role::Coordinator { academy } => {
            let academy = crate::op::code("academy", academy)?;
            if !db::catalog::academy_exists(&app.db, academy).await? {
                return Err(OpError::not_found(format!("academy {academy}")));
            }
            TokenRole::Coordinator {
                academy: academy.to_owned(),
            }
        }
        Role::Establishment { uai } => {
            if !db::catalog::establishment_exists(&app.db, uai.as_str()).await? {
                return Err(OpError::not_found(format!("establishment {uai}")));
            }
            TokenRole::Establishment { uai: uai.clone() }
        }
    };
    let id = Uuid::new_v4();
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let expires_at = input.lifetime.map(|l| Utc::now() + l);
    db::access::insert(
        &app.db,
        NewToken {
            id,
            name,
            role: &role,
            secret_sha256: &sha256(&secret),
            created_by: &actor.label(),
            expires_at,
        },
    )
    .await?;
    Ok(Issued {
        id,
        token: format!("{PREFIX}{}_{secret}", id.simple()),
        expires_at,
    })
}

/// Every token, newest first (admin only).
pub async fn list_tokens(app: &App, actor: &Actor) -> Result<Vec<TokenInfo>, OpError> {
    actor.require_admin("list access tokens")?;
    Ok(db::access::list(&app.db)
        .await?
        .into_iter()
        .map(TokenInfo::from)
        .collect())
}

/// Revokes a token at once (admin only); revoking it again is a conflict.
pub async fn revoke_token(app: &App, actor: &Actor, id: Uuid) -> Result<(), OpError> {
    actor.require_admin("revoke access tokens")?;
    match db::access::revoke(&app.db, id).await? {
        None => Err(OpError::not_found(format!("access token {id}"))),
        Some(true) => Ok(()),
        Some(false) => Err(OpError::conflict(format!(
            "access token {id} is already revoked"
        ))),
    }
}

/// Why a presented token is refused. Every case is answered the same way
/// to the caller (unauthenticated); the variants are for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no token")]
    Missing,
    #[error("not a copiste token")]
    Malformed,
    #[error("unknown token or wrong secret")]
    Unknown,
    #[error("revoked token")]
    Revoked,
    #[error("expired token")]
    Expired,
}

/// An authentication's answer: the token's actor, or why it is refused.
#[derive(Debug)]
pub enum Authenticated {
    Actor { token: Uuid, actor: Actor },
    Refused(Refused),
}

/// Checks a presented token: the actor it acts as, or why it is refused.
/// `Err` is our failure (the database), never the caller's.
pub async fn authenticate(app: &App, presented: &str) -> anyhow::Result<Authenticated> {
    let refused = |r| Ok(Authenticated::Refused(r));
    let Some(rest) = presented.trim().strip_prefix(PREFIX) else {
        return refused(Refused::Malformed);
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return refused(Refused::Malformed);
    };
    let Ok(id) = Uuid::try_parse(id) else {
        return refused(Refused::Malformed);
    };
    let Some(row) = db::access::get(&app.db, id).await? else {
        return refused(Refused::Unknown);
    };
    if !bool::from(sha256(secret).ct_eq(row.secret_sha256.as_slice())) {
        return refused(Refused::Unknown);
    }
    Ok(admit(row))
}

/// The actor of a token that matched, unless it is revoked or expired.
fn admit(row: TokenRow) -> Authenticated {
    if row.revoked_at.is_some() {
        return Authenticated::Refused(Refused::Revoked);
    }
    if row.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Authenticated::Refused(Refused::Expired);
    }
    let actor = match row.role {
        TokenRole::Admin => Actor::Admin(format!("token:{}", row.name)),
        TokenRole::Coordinator { academy } => Actor::Coordinator { academy },
        TokenRole::Establishment { uai } => Actor::Establishment { uai },
    };
    Authenticated::Actor {
        token: row.id,
        actor,
    }
}

/// How long a web session lasts (never longer than its token).
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// A login's answer.
#[derive(Debug)]
pub enum Login {
    /// The session's cookie value (shown to the browser only) and its end.
    Session {
        cookie: String,
        expires_at: DateTime<Utc>,
    },
    Refused(Refused),
}

/// Logs a browser in with a token: a new session of [`SESSION_LIFETIME`]
/// (or until the token expires), of which only a hash is stored.
pub async fn log_in(app: &App, presented: &str) -> anyhow::Result<Login> {
    let token = match authenticate(app, presented).await? {
        Authenticated::Actor { token, .. } => token,
        Authenticated::Refused(r) => return Ok(Login::Refused(r)),
    };
    let row = db::access::get(&app.db, token)
        .await?
        .ok_or_else(|| anyhow::anyhow!("token {token} vanished during the login"))?;
    let mut expires_at = Utc::now() + SESSION_LIFETIME;
    if let Some(end) = row.expires_at {
        expires_at = expires_at.min(end);
    }
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let cookie = hex::encode(bytes);
    db::access::insert_session(&app.db, &sha256(&cookie), token, expires_at).await?;
    Ok(Login::Session { cookie, expires_at })
}

/// The actor of a session cookie: refused when the session ended or its
/// token was revoked or expired since.
pub async fn session(app: &App, cookie: &str) -> anyhow::Result<Authenticated> {
    match db::access::session_token(&app.db, &sha256(cookie)).await? {
        Some(row) => Ok(admit(row)),
        None => Ok(Authenticated::Refused(Refused::Unknown)),
    }
}

/// Ends a session (and sweeps expired ones).
pub async fn log_out(app: &App, cookie: &str) -> anyhow::Result<()> {
    db::access::delete_session(&app.db, &sha256(cookie)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_days_hours_or_minutes() {
        assert_eq!(parse_lifetime("90d"), Ok(chrono::Duration::days(90)));
        assert_eq!(parse_lifetime("12h"), Ok(chrono::Duration::hours(12)));
        assert_eq!(parse_lifetime("30m"), Ok(chrono::Duration::minutes(30)));
        for bad in ["", "d", "0d", "-1d", "90", "90y", "4000d", "1.5d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
