//! Styled error pages for the answers the handlers do not write
//! themselves: an unknown address (404), a method the address does not
//! take (405), a request the extractors cannot read (400, 415, 422: a
//! query string, form or path that does not parse), a body too large
//! (413), a cross-site form (403 of the CSRF layer), a timeout (503) and
//! a panic or other internal failure (500), and the plain-text refusals of
//! download links. A browser gets them as French pages in copiste's
//! layout; the JSON API (`/api/`) gets them as problem documents
//! (application/problem+json), and the metrics and the health checks keep
//! their own answers.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::{french, headers::is_html, pages::Who};

/// The largest error body read to explain an extractor's refusal.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// An error page with its status.
pub fn page(status: StatusCode, who: Option<Who>, title: &'static str, detail: String) -> Response {
    super::pages::error_page(status, who, title, detail)
}

/// Whether the answers to `path` are for a browser: everything but the
/// API, the metrics and the health checks.
fn for_browsers(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path == "/api"
        || path == "/metrics"
        || path == "/healthz"
        || path == "/readyz"
        || path == "/health")
}

/// Turns an error answer that is not a page into a styled French page.
pub async fn styled(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let browser_download = path.starts_with("/downloads/")
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    let response = next.run(request).await;
    let status = response.status();
    if (path.starts_with("/api/") || path == "/api")
        && (status.is_client_error() || status.is_server_error())
        && !is_problem(response.headers())
    {
        return as_problem(response).await;
    }
    if !(status.is_client_error() || status.is_server_error())
        || is_html(response.headers())
        || !for_browsers(&path)
        || (path.starts_with("/downloads/") && !browser_download)
        // A range a download tool asked for: its header says the size.
        || status == StatusCode::RANGE_NOT_SATISFIABLE
    {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(response.into_body(), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let (title, detail) = explain(status, &path, &text);
    let mut styled = page(status, None, title, detail);
    if let Some(allow) = allow {
        styled.headers_mut().insert(header::ALLOW, allow);
    }
    styled
}

/// Whether an answer is a problem document already.
fn is_problem(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

/// An error of the API that its handlers did not write (an unknown
/// address, a method the address does not take, a body too large, a
/// cross-site post, a timeout) as a problem document, keeping its `Allow`
/// header.
async fn as_problem(response: Response) -> Response {
    use axum::response::IntoResponse as _;
    let status = response.status();
    let allow = response.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(response.into_body(), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let detail = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_owned()
    } else {
        text
    };
    let mut problem = super::problem::Problem::of_status(status, detail).into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}

/// What a framework's error means for the person who sees it.
fn explain(status: StatusCode, path: &str, body: &str) -> (&'static str, String) {
    if path.starts_with("/downloads/") {
        return match status {
            StatusCode::GONE if body.contains("expired") => (
                "Lien expiré",
                "Ce lien de téléchargement a expiré : demandez-en un nouveau depuis la page de \
                 l'examen."
                    .into(),
            ),
            StatusCode::GONE => (
                "Téléchargement plus disponible",
                "Ce fichier n'est plus disponible : demandez un nouveau zip depuis la page de \
                 l'examen."
                    .into(),
            ),
            StatusCode::FORBIDDEN => (
                "Lien invalide",
                "Ce lien de téléchargement n'est pas valide : copiez-le en entier, ou demandez-en \
                 un nouveau depuis la page de l'examen."
                    .into(),
            ),
            _ => (
                "Téléchargement impossible",
                "Le stockage ne répond pas : réessayez dans quelques minutes.".into(),
            ),
        };
    }
    match status {
        StatusCode::NOT_FOUND => (
            "Page introuvable",
            "Cette adresse ne correspond à aucune page de copiste.".into(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Action impossible à cette adresse",
            "Cette page ne prend pas cette demande : revenez à la page précédente et \
             utilisez ses boutons."
                .into(),
        ),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => ("Demande invalide", rejection(body)),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "Envoi trop volumineux",
            format!(
                "L'envoi dépasse {} : envoyez un fichier plus petit.",
                french::size(super::MAX_BODY_BYTES as u64)
            ),
        ),
        StatusCode::FORBIDDEN => (
            "Demande refusée",
            "Ce formulaire ne vient pas d'une page de copiste : il est refusé. Ouvrez la page \
             dans copiste et recommencez."
                .into(),
        ),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => (
            "Réponse trop lente",
            "copiste n'a pas répondu à temps : réessayez dans un instant.".into(),
        ),
        s if s.is_server_error() => (
            "Erreur interne",
            "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
        ),
        _ => (
            "Demande impossible",
            "Cette demande n'a pas abouti : revenez à la page précédente.".into(),
        ),
    }
}

/// An extractor's refusal ("Failed to deserialize query string: missing
/// field `uai`"), in French.
fn rejection(body: &str) -> String {
    let reason = body.split_once(": ").map_or(body, |(_, rest)| rest).trim();
    if let Some(field) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!(
            "Il manque le champ « {} » dans la demande.",
            french::field_label(field)
        );
    }
    if let Some((field, _)) = reason.split_once(": ")
        && !field.contains(' ')
    {
        return format!(
            "La valeur du champ « {} » n'est pas acceptée.",
            french::field_label(field)
        );
    }
    "L'adresse ou le formulaire est mal formé : revenez à la page précédente.".into()
}

/// The styled page of a panic inside a handler (tower-http's
/// `CatchPanicLayer`).
pub fn panic_page(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a handler panicked");
    let mut response = page(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "Erreur interne",
        "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractor_refusals_are_said_in_french() {
        assert_eq!(
            rejection("Failed to deserialize query string: missing field `uai`"),
            "Il manque le champ « établissement (UAI) » dans la demande."
        );
        assert_eq!(
            rejection(
                "Failed to deserialize query string: page: number too large to fit in target type"
            ),
            "La valeur du champ « page » n'est pas acceptée."
        );
        assert!(
            rejection("Form requests must have `Content-Type: application/x-www-form-urlencoded`")
                .starts_with("L'adresse")
        );
    }
}
