//! The download links of the local store: `GET /downloads/{token}` hands
//! a finished zip out — 403 for an altered token, 410 for an expired one,
//! the object streamed with `Content-Length`, `Content-Disposition` and
//! single `Range` requests. The HTTP server itself is `copiste serve`'s
//! front door ([`crate::web`]), which mounts this route when the links'
//! signing key is set.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;

use super::token::{self, TokenError};
use crate::storage::{ObjectStream, Storage, StorageError};

#[derive(Clone)]
struct AppState {
    storage: Storage,
    secret: Arc<[u8]>,
}

/// The route of the download links, for [`crate::web::router`].
pub fn router(storage: Storage, secret: &[u8]) -> Router {
    Router::new()
        .route("/downloads/{token}", get(download))
        .route("/health", get(|| async { "ok" }))
        .with_state(AppState {
            storage,
            secret: Arc::from(secret),
        })
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against an
/// object of `size` bytes. `Err(())` when it cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Option<Result<std::ops::Range<u64>, ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        // Several ranges: answer with the whole object, as RFC 9110 allows.
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 || size == 0 {
                return Some(Err(()));
            }
            size.saturating_sub(n)..size
        }
        (start, "") => {
            let a: u64 = start.parse().ok()?;
            a..size
        }
        (start, end) => {
            let a: u64 = start.parse().ok()?;
            let b: u64 = end.parse().ok()?;
            if b < a {
                return Some(Err(()));
            }
            a..(b + 1).min(size)
        }
    };
    if range.start >= size {
        return Some(Err(()));
    }
    Some(Ok(range))
}

/// `Content-Disposition` for a file named `name`: a safe ASCII `filename`
/// (letters, digits, `.`, `-` and `_`; anything else becomes `_`) for old
/// clients, and the exact name as RFC 6266's `filename*` (UTF-8,
/// percent-encoded) for the others.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ascii = if ascii.trim_matches(['.', '_']).is_empty() {
        "download.zip".to_owned()
    } else {
        ascii
    };
    let mut encoded = String::with_capacity(name.len());
    for b in name.bytes() {
        // RFC 8187 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_link(&state, &token, &headers)
        .await
        .unwrap_or_else(Refused::response)
}

/// Why a link is not answered with its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// An altered token, or one naming an object that is not a download.
    Invalid,
    Expired,
    /// The object is no longer in the store.
    Gone,
    /// The store cannot answer.
    Unavailable,
    /// A range beyond the object's `size` bytes.
    Range {
        size: u64,
    },
}

impl Refused {
    fn response(self) -> Response {
        match self {
            Self::Invalid => plain(StatusCode::FORBIDDEN, "this download link is not valid"),
            Self::Expired => plain(
                StatusCode::GONE,
                "this download link has expired; ask for a new one",
            ),
            Self::Gone => plain(StatusCode::GONE, "this download is no longer available"),
            Self::Unavailable => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; try again",
            ),
            Self::Range { size } => {
                let mut response =
                    plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                response
            }
        }
    }
}

/// The object a link grants, streamed whole or in the range asked for.
async fn serve_link(
    state: &AppState,
    token: &str,
    headers: &HeaderMap,
) -> Result<Response, Refused> {
    let grant = granted(state, token)?;
    let size = match state.storage.size(&grant.key).await {
        Ok(Some(size)) => size,
        Ok(None) => return Err(Refused::Gone),
        Err(e) => {
            tracing::error!(key = %grant.key, error = %e, "cannot read a download");
            return Err(Refused::Unavailable);
        }
    };
    let range = requested_range(headers, size)?;
    let partial = range.is_some();
    let object = match state.storage.get_stream(&grant.key, range).await {
        Ok(o) => o,
        Err(StorageError::NotFound(_)) => return Err(Refused::Gone),
        Err(e) => {
            tracing::error!(key = %grant.key, error = %e, "cannot stream a download");
            return Err(Refused::Unavailable);
        }
    };
    let filename = grant.key.rsplit('/').next().unwrap_or("download.zip");
    Ok(zip_response(object, filename, partial))
}

/// The grant of a valid, unexpired link to a download.
fn granted(state: &AppState, token: &str) -> Result<token::Grant, Refused> {
    let grant = match token::verify(token, &state.secret, Utc::now()) {
        Ok(g) => g,
        Err(TokenError::Tampered) => return Err(Refused::Invalid),
        Err(TokenError::Expired) => return Err(Refused::Expired),
    };
    if !token::servable(&grant.key) {
        // Only a holder of the signing key can make such a token.
        tracing::warn!(key = %grant.key, "refused a link to an object that is not a download");
        return Err(Refused::Invalid);
    }
    Ok(grant)
}

/// The single range the request asks for within `size` bytes, if any.
fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, Refused> {
    match headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size))
    {
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(())) => Err(Refused::Range { size }),
        None => Ok(None),
    }
}

/// The answer streaming `object` as the zip `filename`: 206 with its
/// `Content-Range` when `partial`.
fn zip_response(object: ObjectStream, filename: &str, partial: bool) -> Response {
    let length = object.range.end - object.range.start;
    let content_range = format!(
        "bytes {}-{}/{}",
        object.range.start,
        object.range.end.saturating_sub(1),
        object.size
    );
    let mut response = Response::new(Body::from_stream(object.stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if partial {
        if let Ok(v) = HeaderValue::from_str(&content_range) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{content_disposition, parse_range};

    #[test]
    fn the_file_name_cannot_break_out_of_content_disposition() {
        let header = content_disposition("HG \"q\"; filename=evil.exe_0750001A.zip");
        assert_eq!(
            header,
            "attachment; filename=\"HG__q___filename_evil.exe_0750001A.zip\"; \
             filename*=UTF-8''HG%20%22q%22%3B%20filename%3Devil.exe_0750001A.zip"
        );
        assert!(axum::http::HeaderValue::from_str(&header).is_ok());
        let accented = content_disposition("BAC26-HISTOIRE-GÉO_0750001A.zip");
        assert!(
            accented.contains("filename=\"BAC26-HISTOIRE-G_O_0750001A.zip\"")
                && accented.contains("filename*=UTF-8''BAC26-HISTOIRE-G%C3%89O_0750001A.zip"),
            "{accented}"
        );
        assert!(content_disposition("\"").contains("filename=\"download.zip\""));
    }

    #[test]
    fn ranges_are_parsed_against_the_size() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Ok(50..100)));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=9-2", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
