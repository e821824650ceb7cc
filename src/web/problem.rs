//! Errors of the HTTP API as `application/problem+json` (RFC 9457): one
//! stable `type` per kind of answer, the reason in `detail`, and never a
//! stack trace, SQL text or internal path (an internal error is logged
//! with its request's id and answered with a generic detail).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{access::Refused, op::OpError};

/// A problem document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// Stable per kind of answer, e.g. `/problems/refused`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The input field at fault (invalid input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail,
            field: None,
        }
    }

    /// No token, or one that is unknown, revoked or expired.
    pub fn unauthenticated(why: Refused) -> Self {
        tracing::info!(reason = %why, "request refused: not authenticated");
        Self::new(
            StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated",
            "Authentication required",
            "a valid access token is required (Authorization: Bearer <token>)".into(),
        )
    }

    /// A request that cannot be read (bad JSON, bad query string).
    pub fn bad_request(detail: String) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid",
            "Invalid input",
            detail,
        )
    }
}

impl Problem {
    /// The problem of an answer that copiste's handlers did not write (an
    /// unknown address, a method the address does not take, a body that
    /// cannot be read or is too large, a cross-site form, a timeout), by
    /// its status; `detail` is the framework's reason (never shown for a
    /// server error).
    pub fn of_status(status: StatusCode, detail: String) -> Self {
        let (kind, title) = match status {
            StatusCode::UNAUTHORIZED => ("/problems/unauthenticated", "Authentication required"),
            StatusCode::FORBIDDEN => ("/problems/forbidden", "Forbidden"),
            StatusCode::NOT_FOUND => ("/problems/not-found", "Not found"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("/problems/method-not-allowed", "Method not allowed")
            }
            StatusCode::CONFLICT => ("/problems/conflict", "Conflict"),
            StatusCode::PAYLOAD_TOO_LARGE => ("/problems/too-large", "Body too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("/problems/unsupported-media-type", "Unsupported media type")
            }
            StatusCode::UNPROCESSABLE_ENTITY => ("/problems/invalid", "Invalid input"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                ("/problems/unavailable", "Unavailable")
            }
            s if s.is_server_error() => ("/problems/internal", "Internal error"),
            _ => ("/problems/bad-request", "Bad request"),
        };
        let detail = if status.is_server_error() {
            match status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                    "copiste did not answer in time; try again in a moment".into()
                }
                _ => "copiste could not answer; the error is logged".into(),
            }
        } else {
            detail
        };
        Self::new(status, kind, title, detail)
    }
}

impl From<OpError> for Problem {
    fn from(e: OpError) -> Self {
        let detail = e.to_string();
        match e {
            OpError::Invalid { field, reason } => Self {
                field: Some(field),
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "/problems/invalid",
                    "Invalid input",
                    format!("{field}: {reason}"),
                )
            },
            OpError::NotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "/problems/not-found",
                "Not found",
                detail,
            ),
            OpError::Forbidden { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "/problems/forbidden",
                "Forbidden",
                detail,
            ),
            OpError::Refused(_) => Self::new(
                StatusCode::CONFLICT,
                "/problems/refused",
                "Refused by a rule",
                detail,
            ),
            OpError::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "/problems/conflict",
                "Conflict",
                detail,
            ),
            OpError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "/problems/internal",
                    "Internal error",
                    "copiste could not answer; the error is logged".into(),
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthenticated = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// An operation's error answered as a problem.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// The error type of every API handler.
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        Self(Problem::from(e))
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(p)
    }
}
