//! The HTTP API on a loopback port: every endpoint asked by every kind of
//! caller (admin, the coordinator of the academy, another academy's, the
//! establishment, another establishment, no token, a revoked token, an
//! expired one) answers with the expected status, errors as problem
//! documents.

use std::net::SocketAddr;

use copiste::{
    access::{self, Role, TokenInput},
    db::access::{NewToken, TokenRole},
    op::Actor,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{TestApp, TwoAcademies};

const PHILO: &str = "BAC26-PHILO";
const E3C: &str = "BAC26-E3C-HG";
const MATHS_H: &str = "BAC26-MATHS-H";

/// Serves the router of `copiste serve` on a free loopback port.
async fn serve(app: &TestApp) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = copiste::web::router(app.app());
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn token(app: &TestApp, role: Role) -> String {
    access::create_token(
        &app.app(),
        &Actor::admin("test"),
        &TokenInput {
            role,
            name: "test".into(),
            lifetime: None,
        },
    )
    .await
    .expect("token")
    .token
}

/// A token that expired an hour ago (written as the ledger stores it).
async fn expired_token(app: &TestApp) -> String {
    let id = uuid::Uuid::new_v4();
    let secret = "0123456789abcdef0123456789abcdef";
    let hash: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    copiste::db::access::insert(
        &app.db,
        NewToken {
            id,
            name: "expired",
            role: &TokenRole::Admin,
            secret_sha256: &hash,
            created_by: "test",
            expires_at: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        },
    )
    .await
    .expect("insert");
    format!("cps_{}_{secret}", id.simple())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    CoordinatorA,
    CoordinatorB,
    Establishment,
    OtherEstablishment,
    NoToken,
    Revoked,
    Expired,
}

/// What an endpoint answers a caller: allowed (the endpoint's own answer
/// to a caller in its scope, exactly), forbidden (403) or unauthenticated
/// (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed(StatusCode),
    Forbidden,
    Unauthenticated,
}

fn expect(who: Who, allowed: &[Who], answer: StatusCode) -> Expect {
    match who {
        Who::NoToken | Who::Revoked | Who::Expired => Expect::Unauthenticated,
        w if allowed.contains(&w) => Expect::Allowed(answer),
        _ => Expect::Forbidden,
    }
}

/// An endpoint: method, path, body, who may ask, and what it answers them.
type Endpoint = (Method, String, Option<Value>, Vec<Who>, StatusCode);

#[tokio::test]
async fn every_endpoint_answers_every_caller_as_its_scope_says() {
    let app = TestApp::new().await;
    app.import_demo(3, 4).await;
    let TwoAcademies {
        uai,
        academy_a,
        other,
        academy_b,
    } = app.two_academies(PHILO).await;
    let numero = app.first_numero(PHILO, &uai).await;
    let noop = app
        .enqueue(
            &copiste::jobs::noop::Noop::default(),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let unit_job = app.enqueue_closure(PHILO, &uai).await;

    let revoked = token(&app, Role::Admin).await;
    let revoked_id = revoked
        .strip_prefix("cps_")
        .and_then(|r| r.split('_').next())
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .expect("token id");
    access::revoke_token(&app.app(), &Actor::admin("test"), revoked_id)
        .await
        .expect("revoke");
    let tokens = [
        (Who::Admin, Some(token(&app, Role::Admin).await)),
        (
            Who::CoordinatorA,
            Some(
                token(
                    &app,
                    Role::Coordinator {
                        academy: academy_a.clone(),
                    },
                )
                .await,
            ),
        ),
        (
            Who::CoordinatorB,
            Some(token(&app, Role::Coordinator { academy: academy_b }).await),
        ),
        (
            Who::Establishment,
            Some(token(&app, Role::Establishment { uai: uai.clone() }).await),
        ),
        (
            Who::OtherEstablishment,
            Some(token(&app, Role::Establishment { uai: other.clone() }).await),
        ),
        (Who::NoToken, None),
        (Who::Revoked, Some(revoked)),
        (Who::Expired, Some(expired_token(&app).await)),
    ];

    use Who::*;
    let everyone = [
        Admin,
        CoordinatorA,
        CoordinatorB,
        Establishment,
        OtherEstablishment,
    ];
    let unit = [Admin, CoordinatorA, Establishment];
    const OK: StatusCode = StatusCode::OK;
    // The rule's refusal, not the scope's: nothing of PHILO is
    // transmitted yet, the unit job is queued (not dead).
    const CONFLICT: StatusCode = StatusCode::CONFLICT;
    let endpoints: Vec<Endpoint> = vec![
        (
            Method::GET,
            "/api/v1/me".into(),
            None,
            everyone.to_vec(),
            OK,
        ),
        (
            Method::GET,
            "/api/v1/exams".into(),
            None,
            everyone.to_vec(),
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/exams/{PHILO}/closure"),
            None,
            everyone.to_vec(),
            OK,
        ),
        (
            Method::POST,
            format!("/api/v1/exams/{PHILO}/closure"),
            Some(json!({"establishment": uai.as_str()})),
            unit.to_vec(),
            OK,
        ),
        (
            Method::POST,
            format!("/api/v1/exams/{PHILO}/relaunch"),
            Some(json!({"establishment": uai.as_str()})),
            unit.to_vec(),
            OK,
        ),
        (
            Method::POST,
            format!("/api/v1/exams/{MATHS_H}/harmonisation-passes"),
            Some(json!({})),
            vec![Admin, CoordinatorA, CoordinatorB],
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/exams/{PHILO}/establishments/{uai}/candidates?q=a"),
            None,
            unit.to_vec(),
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/exams/{PHILO}/copies/{numero}/pdf"),
            None,
            unit.to_vec(),
            CONFLICT,
        ),
        (
            Method::POST,
            format!("/api/v1/exams/{PHILO}/establishments/{uai}/zip"),
            None,
            unit.to_vec(),
            CONFLICT,
        ),
        (
            Method::GET,
            format!("/api/v1/exams/{PHILO}/establishments/{uai}/zip"),
            None,
            unit.to_vec(),
            OK,
        ),
        (
            Method::GET,
            "/api/v1/jobs".into(),
            None,
            everyone.to_vec(),
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs?establishment={uai}"),
            None,
            unit.to_vec(),
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{noop}"),
            None,
            vec![Admin],
            OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{unit_job}"),
            None,
            unit.to_vec(),
            OK,
        ),
        (
            Method::POST,
            format!("/api/v1/jobs/{unit_job}/retry"),
            None,
            vec![Admin, CoordinatorA],
            CONFLICT,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{unit_job}/events"),
            None,
            unit.to_vec(),
            OK,
        ),
        (
            Method::POST,
            format!("/api/v1/jobs/{noop}/cancel"),
            None,
            vec![Admin],
            OK,
        ),
        // Last: what admin changes here comes after everyone else asked.
        (
            Method::POST,
            format!("/api/v1/exams/{E3C}/publication"),
            None,
            vec![Admin],
            OK,
        ),
    ];

    let addr = serve(&app).await;
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let mut wrong = Vec::new();
    let mut asked = 0;
    for (method, path, body, allowed, answer) in &endpoints {
        // Admin last on each endpoint, for the same reason.
        for (who, token) in tokens.iter().rev() {
            asked += 1;
            let mut request = client.request(method.clone(), format!("http://{addr}{path}"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = request.send().await.expect("answer");
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let want = expect(*who, allowed, *answer);
            let ok = match want {
                Expect::Allowed(answer) => status == answer,
                Expect::Forbidden => status == StatusCode::FORBIDDEN,
                Expect::Unauthenticated => status == StatusCode::UNAUTHORIZED,
            };
            if !ok {
                let text = response.text().await.unwrap_or_default();
                wrong.push(format!(
                    "{method} {path} by {who:?}: expected {want:?}, got {status} {text}"
                ));
                continue;
            }
            if status.is_client_error() && content_type != "application/problem+json" {
                wrong.push(format!(
                    "{method} {path} by {who:?}: {status} as {content_type}"
                ));
            }
        }
    }
    assert_eq!(asked, endpoints.len() * tokens.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn errors_are_problem_documents_without_internals() {
    let app = TestApp::new().await;
    app.import_demo(2, 3).await;
    let addr = serve(&app).await;
    let admin = token(&app, Role::Admin).await;
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let get = |path: String, bearer: Option<String>| {
        let mut r = client.get(format!("http://{addr}{path}"));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        async move {
            let response = r.send().await.expect("answer");
            let status = response.status();
            let headers = response.headers().clone();
            let body: Value = response.json().await.expect("a JSON body");
            (status, headers, body)
        }
    };
    let (status, headers, body) = get("/api/v1/me".into(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["type"], "/problems/unauthenticated");
    let (status, _, body) = get("/api/v1/me".into(), Some("cps_nonsense".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, headers, body) = get(
        "/api/v1/exams/BAC26-NOPE/closure".into(),
        Some(admin.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["type"], "/problems/not-found");
    assert_eq!(body["status"], 404);
    assert_eq!(body["detail"], "unknown exam BAC26-NOPE");
    let uai = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments")
        .remove(0);
    let (status, _, body) = get(
        format!("/api/v1/exams/{PHILO}/establishments/{uai}/candidates?q=%25"),
        Some(admin.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "query");
    // An E3C copy that exists: its switches cannot be turned off.
    let e3c_uai = copiste::db::catalog::exam_establishments(&app.db, E3C, None)
        .await
        .expect("establishments")
        .remove(0);
    let e3c_numero = app.first_numero(E3C, &e3c_uai).await;
    let (status, _, body) = get(
        format!("/api/v1/exams/{E3C}/copies/{e3c_numero}/pdf?details=false"),
        Some(admin.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["type"], "/problems/refused", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is E3C")),
        "{body}"
    );
    // Hostile input never reaches the database as such: a NUL byte in a
    // path or a query is invalid input, not an internal error.
    for path in [
        format!("/api/v1/exams/{PHILO}/copies/%00%27%22/pdf"),
        "/api/v1/exams/..%2F..%2Fetc%00/closure".to_owned(),
        format!("/api/v1/exams/{PHILO}/establishments/{uai}/candidates?q=a%00b"),
        "/api/v1/jobs?exam=%00".to_owned(),
    ] {
        let (status, _, body) = get(path.clone(), Some(admin.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
    }
    let (status, _, body) = get("/api/v1/jobs/not-a-uuid".into(), Some(admin)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let text = body.to_string();
    assert!(!text.contains("src/") && !text.contains("SELECT"), "{text}");
}

/// The OpenAPI document lists every route of the API (the table above),
/// with the bearer scheme, and is itself served.
#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = TestApp::new().await;
    let addr = serve(&app).await;
    let doc: Value = copiste::tls::http_client()
        .build()
        .expect("an HTTP client")
        .get(format!("http://{addr}/api/openapi.json"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let mut listed: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("an item").keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let mut routes = vec![
        "GET /api/openapi.json",
        "GET /api/v1/me",
        "GET /api/v1/exams",
        "GET /api/v1/exams/{exam}/closure",
        "POST /api/v1/exams/{exam}/closure",
        "POST /api/v1/exams/{exam}/relaunch",
        "POST /api/v1/exams/{exam}/zips",
        "POST /api/v1/exams/{exam}/publication",
        "POST /api/v1/exams/{exam}/harmonisation-passes",
        "GET /api/v1/exams/{exam}/establishments/{uai}/candidates",
        "GET /api/v1/exams/{exam}/copies/{numero}/pdf",
        "GET /api/v1/exams/{exam}/establishments/{uai}/zip",
        "POST /api/v1/exams/{exam}/establishments/{uai}/zip",
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{id}",
        "POST /api/v1/jobs/retry-dead",
        "POST /api/v1/jobs/{id}/retry",
        "POST /api/v1/jobs/{id}/cancel",
        "GET /api/v1/jobs/{id}/events",
    ];
    routes.sort();
    assert_eq!(listed, routes);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every error answer is a problem document, and every route declares
    // the answers any route may give.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("an item") {
            let responses = op["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let types: Vec<&String> = response["content"]
                        .as_object()
                        .expect("content")
                        .keys()
                        .collect();
                    assert_eq!(
                        types,
                        vec!["application/problem+json"],
                        "{method} {path} {status}"
                    );
                }
            }
            if path.starts_with("/api/v1/") {
                for status in ["401", "500", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} does not declare {status}"
                    );
                }
            }
        }
    }
    // Every route answers (none is documented without being served).
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    for route in &routes {
        let (method, path) = route.split_once(' ').expect("method and path");
        let path = path
            .replace("{exam}", "X")
            .replace("{uai}", "0750001A")
            .replace("{numero}", "1")
            .replace("{id}", &uuid::Uuid::nil().to_string());
        let status = client
            .request(
                method.parse().expect("method"),
                format!("http://{addr}{path}"),
            )
            .send()
            .await
            .expect("answer")
            .status();
        assert_ne!(status, StatusCode::NOT_FOUND, "{route} is not served");
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{route} is not served"
        );
    }
}

/// The jobs list through the API: pages follow `next` as `cursor`, each
/// job once; counts say which are capped; a malformed cursor is a 422
/// naming the cursor, and so is an `offset` (pages are read by cursor
/// only).
#[tokio::test]
async fn the_jobs_list_pages_by_cursor() {
    let app = TestApp::new().await;
    let pool = sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool");
    // 12 jobs at one instant, 13 at another: ties are the rule.
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by, created_at)
         SELECT gen_random_uuid(), 'noop', '{}', 'succeeded', 1, 'test',
                CASE WHEN g <= 12 THEN now() ELSE now() - interval '1 minute' END
         FROM generate_series(1, 25) g",
    )
    .execute(&pool)
    .await
    .expect("jobs");
    let addr = serve(&app).await;
    let admin = token(&app, Role::Admin).await;
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let get = |query: String| {
        let request = client
            .get(format!("http://{addr}/api/v1/jobs?{query}"))
            .bearer_auth(&admin);
        async move {
            let response = request.send().await.expect("answer");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut query = "limit=10".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(query.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        for job in body["jobs"].as_array().expect("jobs") {
            assert!(seen.insert(job["id"].clone()), "{job} came twice");
        }
        assert_eq!(body["counts"]["succeeded"], 25, "{body}");
        assert_eq!(body["capped"], json!([]), "{body}");
        assert_eq!(body["more"], body["next"].is_string(), "{body}");
        match body["next"].as_str() {
            Some(next) => query = format!("limit=10&cursor={next}"),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (25, 3));
    let (status, body) = get("limit=10&cursor=%25%25nonsense".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "cursor", "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("cursor"),
        "{body}"
    );
    // The API pages by cursor only: the offset of earlier versions is
    // refused, naming it.
    let (status, body) = get("limit=10&offset=20".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "offset", "{body}");
}

/// What the API's document says of bodies and parameters is what the
/// routes do: no body, `null` and a `null` field are "every
/// establishment"; an unknown field is invalid input, a body that is not
/// JSON 415; every error the handlers do not write (an unknown address, a
/// method the address does not take, a path that does not decode) is a
/// problem document too; a UAI whose check letter is wrong names no
/// establishment (404); and a published exam's closure job is not retried
/// through the API either.
#[tokio::test]
async fn the_api_answers_as_its_document_says() {
    let app = TestApp::new().await;
    app.import_demo(2, 3).await;
    let addr = serve(&app).await;
    let admin = token(&app, Role::Admin).await;
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let send = |method: Method, path: &str, body: Option<(&'static str, &'static str)>| {
        let mut request = client
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(&admin);
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        async move {
            let response = request.send().await.expect("answer");
            let status = response.status();
            let headers = response.headers().clone();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, headers, body)
        }
    };
    let relaunch = format!("/api/v1/exams/{PHILO}/relaunch");
    for body in [
        None,
        Some(("application/json", "null")),
        Some(("application/json", "{}")),
        Some(("application/json", r#"{"establishment": null}"#)),
    ] {
        let (status, _, answer) = send(Method::POST, &relaunch, body).await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {answer}");
    }
    let (status, headers, answer) = send(
        Method::POST,
        &relaunch,
        Some(("application/json", r#"{"establishments": []}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, headers, answer) = send(Method::POST, &relaunch, Some(("text/plain", "{}"))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert_eq!(headers["content-type"], "application/problem+json");
    for (method, path, expected) in [
        (
            Method::GET,
            "/api/v1/nothing-here".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/api/v1/exams".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/api/v1/exams/%FF/closure".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("/api/v1/exams/{PHILO}/establishments/0750001B/zip"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/jobs?limit=many".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, headers, answer) = send(method.clone(), &path, None).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{method} {path}"
        );
        assert_eq!(
            answer["status"],
            expected.as_u16(),
            "{method} {path}: {answer}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(headers.contains_key("allow"), "{headers:?}");
        }
    }
    // A closure job cancelled by the publication is not retried.
    let uai = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments")
        .remove(0);
    let job = app
        .enqueue(
            &copiste::closure::payload::Closure {
                exam: PHILO.into(),
                establishment: uai,
            },
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let (status, _, answer) = send(
        Method::POST,
        &format!("/api/v1/exams/{PHILO}/publication"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) = send(Method::POST, &format!("/api/v1/jobs/{job}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["type"], "/problems/refused", "{answer}");
}
