//! The protective headers of every answer of `copiste serve`.
//!
//! Every HTML page carries a strict `Content-Security-Policy`: copiste's
//! own scripts, styles and frames only, forms posted to copiste only, and
//! `frame-ancestors 'none'` (with `X-Frame-Options: DENY` for older
//! browsers), so that no other site can frame the closure or
//! harmonisation buttons. The one answer copiste frames itself, a copy's
//! PDF, sets its own policy (`frame-ancestors 'self'`, see
//! [`super::pdf_response`]) and keeps it. Every answer is never sniffed as
//! another type (`X-Content-Type-Options: nosniff`) and sends its address
//! to copiste only (`Referrer-Policy: same-origin`). Pages are never
//! stored (`Cache-Control: no-store`): after logout, Back does not show a
//! page of the session from the browser's cache.

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::Response,
};

/// The policy of every HTML page: nothing but copiste's own resources.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Adds the protective headers to an answer (those it set itself are
/// kept).
pub async fn protect(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let html = is_html(headers);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if html {
        set(headers, header::CONTENT_SECURITY_POLICY, PAGE_POLICY);
        set(headers, header::X_FRAME_OPTIONS, "DENY");
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Whether an answer is an HTML page.
pub fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}
