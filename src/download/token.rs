//! Download tokens for the local store: an HMAC-SHA256, under the key from
//! `COPISTE_DOWNLOADS__SIGNING_KEY`, over the object key, the
//! establishment and the expiry. `copiste serve` checks them.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token grants: one object, for one establishment, until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Object key.
    #[serde(rename = "k")]
    pub key: String,
    /// Establishment (UAI).
    #[serde(rename = "u")]
    pub establishment: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is invalid or has been altered")]
    Tampered,
    #[error("the link has expired")]
    Expired,
}

fn mac(secret: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(payload);
    mac
}

/// Whether `key` is a download object that a link may hand out: under
/// `downloads/`, not a build's staging folder, a valid key (no `..`).
pub fn servable(key: &str) -> bool {
    key.starts_with(super::DOWNLOADS_PREFIX)
        && !key.starts_with(super::STAGING_PREFIX)
        && crate::storage::Storage::check_key(key).is_ok()
}

/// Signs a grant: `<payload>.<mac>`, both base64url.
pub fn sign(grant: &Grant, secret: &[u8]) -> String {
    // A grant of strings and an integer always serialises.
    let payload = serde_json::to_vec(grant).unwrap_or_default();
    let tag = mac(secret, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Checks a token and returns its grant: the MAC first (constant time),
/// then the expiry against `now`.
pub fn verify(token: &str, secret: &[u8], now: DateTime<Utc>) -> Result<Grant, TokenError> {
    let (payload, tag) = token.split_once('.').ok_or(TokenError::Tampered)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Tampered)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Tampered)?;
    mac(secret, &payload)
        .verify_slice(&tag)
        .map_err(|_| TokenError::Tampered)?;
    let grant: Grant = serde_json::from_slice(&payload).map_err(|_| TokenError::Tampered)?;
    if grant.expires <= now.timestamp() {
        return Err(TokenError::Expired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_download_objects_are_servable() {
        assert!(servable("downloads/BAC26/0750001A/d1a1n1/j/a.zip"));
        assert!(!servable("scans/BAC26/a.jpg"));
        assert!(!servable("downloads/../scans/a.jpg"));
        assert!(!servable("downloads/.staging/j/a.zip"));
        assert!(!servable("downloadsx/a.zip"));
    }

    #[test]
    fn tokens_resist_tampering_and_expire() {
        let grant = Grant {
            key: "downloads/a.zip".into(),
            establishment: "0750001U".into(),
            expires: 2_000_000_000,
        };
        let token = sign(&grant, b"secret");
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("time");
        assert_eq!(verify(&token, b"secret", now), Ok(grant.clone()));
        assert_eq!(verify(&token, b"other", now), Err(TokenError::Tampered));
        let later = DateTime::from_timestamp(2_000_000_000, 0).expect("time");
        assert_eq!(verify(&token, b"secret", later), Err(TokenError::Expired));
        // Another key in the payload, the same MAC.
        let (_, tag) = token.split_once('.').expect("dot");
        let forged = Grant {
            key: "downloads/b.zip".into(),
            ..grant
        };
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"))
        );
        assert_eq!(verify(&forged, b"secret", now), Err(TokenError::Tampered));
        assert_eq!(verify("garbage", b"secret", now), Err(TokenError::Tampered));
    }
}
