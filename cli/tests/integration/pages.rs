//! The web pages over HTTP, as a browser without JavaScript uses them:
//! login with an access token, a session cookie, pages scoped to who is
//! logged in, cross-site posts refused, logout.

use copiste::{
    access::{self, Role, TokenInput},
    domain::Uai,
    op::Actor,
};
use reqwest::{StatusCode, header};

use crate::support::TestApp;

const PHILO: &str = "BAC26-PHILO";
const E3C: &str = "BAC26-E3C-HG";

pub(crate) async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = copiste::web::router(app.app());
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

pub(crate) async fn token(app: &TestApp, role: Role) -> (uuid::Uuid, String) {
    let issued = access::create_token(
        &app.app(),
        &Actor::admin("test"),
        &TokenInput {
            role,
            name: "pages".into(),
            lifetime: Some(chrono::Duration::days(1)),
        },
    )
    .await
    .expect("token");
    (issued.id, issued.token)
}

pub(crate) fn client() -> reqwest::Client {
    copiste::tls::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in and returns the session cookie (`name=value`).
pub(crate) async fn log_in(base: &str, token: &str) -> String {
    let response = client()
        .post(format!("{base}/connexion"))
        .form(&[("cle", token)])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain http: {set}");
    set.split(';').next().expect("name=value").to_owned()
}

/// The status and body of the page at `path`, with the session `cookie`.
pub(crate) async fn page(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("page");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn an_establishment_logs_in_sees_its_own_and_is_refused_the_rest() {
    let app = TestApp::new().await;
    app.import_demo(3, 4).await;
    let uais = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments");
    let (own, other): (Uai, Uai) = (uais[0].clone(), uais[1].clone());
    let base = serve(&app).await;

    // No session: to the login page.
    let response = client()
        .get(format!("{base}/examens"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/connexion");

    // A wrong token: a message, no cookie.
    let response = client()
        .post(format!("{base}/connexion"))
        .form(&[("cle", "cps_wrong")])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("inconnue, révoquée ou expirée")
    );

    let (token_id, token) = token(&app, Role::Establishment { uai: own.clone() }).await;
    let cookie = log_in(&base, &token).await;
    let (status, body) = page(&base, &cookie, "/examens").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(PHILO) && body.contains(&format!("Établissement {own}")),
        "{body}"
    );

    // What does not exist is said in French, its code kept.
    let (status, body) = page(&base, &cookie, "/examens/BAC26-NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("introuvable : l&#x27;examen BAC26-NOPE")
            || body.contains("introuvable : l&#39;examen BAC26-NOPE")
            || body.contains("introuvable : l'examen BAC26-NOPE"),
        "{body}"
    );

    let (status, body) = page(&base, &cookie, &format!("/examens/{PHILO}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(own.as_str()), "its unit is shown");
    assert!(
        !body.contains(other.as_str()),
        "another establishment's unit is not: {body}"
    );
    assert!(body.contains("Lancer la clôture"));

    // Another establishment's candidates: the 403 page.
    let (status, body) = page(
        &base,
        &cookie,
        &format!("/examens/{PHILO}/candidats?uai={other}&q=a"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("Accès refusé"), "{body}");
    // Its own: found, accent-insensitively.
    let (status, _) = page(
        &base,
        &cookie,
        &format!("/examens/{PHILO}/candidats?uai={own}&q=a"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A copy not transmitted yet: the rule's page, never a viewer around
    // an error (the E3C switches of a transmitted copy: e2e/).
    let numero = app.first_numero(E3C, &own).await;
    let (status, body) = page(&base, &cookie, &format!("/examens/{E3C}/copies/{numero}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("pas encore été transmise") && !body.contains("<iframe"),
        "{body}"
    );

    // A cross-site form post is refused before it reaches the operation.
    let response = client()
        .post(format!("{base}/examens/{PHILO}/cloture"))
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .header(header::ORIGIN, "https://elsewhere.example")
        .form(&[("establishment", own.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.counts().await.values().sum::<i64>(), 0, "no job");
    // The same post from the page itself asks for a confirmation that
    // says what will be sent, and enqueues nothing.
    let response = client()
        .post(format!("{base}/examens/{PHILO}/cloture"))
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[("establishment", own.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    let asked = response.text().await.expect("body");
    assert!(
        asked.contains("Confirmer la clôture")
            && asked.contains(PHILO)
            && asked.contains("1 établissement")
            && asked.contains("name=\"confirme\""),
        "{asked}"
    );
    assert_eq!(app.counts().await.values().sum::<i64>(), 0, "no job yet");
    // Confirmed, it closes the unit.
    let response = client()
        .post(format!("{base}/examens/{PHILO}/cloture"))
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[("establishment", own.as_str()), ("confirme", "1")])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("travail lancé")
    );
    let jobs = copiste::db::jobs::list_page(
        &app.db,
        &copiste::db::jobs::JobFilter {
            kind: Some("closure"),
            ..Default::default()
        },
        None,
        10,
        0,
    )
    .await
    .expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].created_by, format!("establishment:{own}"));

    // Revoking the token ends its sessions, and the login page says so,
    // then leads back to the page asked for.
    access::revoke_token(&app.app(), &Actor::admin("test"), token_id)
        .await
        .expect("revoke");
    let response = client()
        .get(format!("{base}/travaux?status=dead"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = response.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        to,
        "/connexion?suite=%2Ftravaux%3Fstatus%3Ddead&motif=revoquee"
    );
    let (_, login) = page(&base, "", &to).await;
    assert!(
        login.contains("a été révoquée") && login.contains("value=\"/travaux?status=dead\""),
        "{login}"
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_assets_are_served() {
    let app = TestApp::new().await;
    app.import_demo(2, 2).await;
    let base = serve(&app).await;
    let (_, token) = token(&app, Role::Admin).await;
    let cookie = log_in(&base, &token).await;
    let (status, body) = page(&base, &cookie, "/travaux").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = client()
        .post(format!("{base}/deconnexion"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()[header::SET_COOKIE]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    let response = client()
        .get(format!("{base}/travaux"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the session is gone"
    );
    for (path, kind) in [
        ("/static/copiste.js", "text/javascript"),
        ("/static/copiste.css", "text/css"),
    ] {
        let response = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with(kind)
        );
    }
}

/// The jobs page pages by cursor: "plus anciens" carries the next page's
/// cursor, the last page has none, and a cursor the list did not make is
/// refused as invalid input.
#[tokio::test]
async fn the_jobs_page_links_to_the_next_page_by_cursor() {
    let app = TestApp::new().await;
    let pool = sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool");
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by, created_at)
         SELECT gen_random_uuid(), 'noop', '{}', 'succeeded', 1, 'test', now()
         FROM generate_series(1, 60)",
    )
    .execute(&pool)
    .await
    .expect("jobs");
    let base = serve(&app).await;
    let (_, token) = token(&app, Role::Admin).await;
    let cookie = log_in(&base, &token).await;
    let (status, first) = page(&base, &cookie, "/travaux").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        first.matches("href=\"/travaux/").count(),
        50,
        "a page of 50"
    );
    // The link just before "plus anciens" (the status counts link to the
    // list too).
    let before = first.split("plus anciens").next().expect("text");
    let next = before
        .rsplit("href=\"/travaux?")
        .next()
        .and_then(|rest| rest.split('"').next())
        // The template escapes `&` (askama writes `&#38;`).
        .map(|query| {
            format!(
                "/travaux?{}",
                query.replace("&#38;", "&").replace("&amp;", "&")
            )
        })
        .expect("a link to the next page");
    assert!(
        next.contains("apres=") && first.contains("plus anciens"),
        "{next}"
    );
    let (status, second) = page(&base, &cookie, &next).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second.matches("href=\"/travaux/").count(),
        10,
        "the last 10"
    );
    assert!(!second.contains("plus anciens"), "no page after the last");
    assert!(
        second.contains("les plus récents"),
        "a way back to the newest"
    );
    let (status, body) = page(&base, &cookie, "/travaux?apres=nonsense").await;
    assert!(status.is_client_error(), "{status} {body}");
}

/// Every page carries the protective headers (a strict policy, never
/// framed, never sniffed, never cached); the answers the handlers do not
/// write themselves (an unknown address, a method the address does not
/// take, a query string the extractor refuses) are French pages in the
/// layout, with the same headers; the API keeps its own answers.
#[tokio::test]
async fn pages_are_protected_and_every_error_is_a_french_page() {
    let app = TestApp::new().await;
    app.import_demo(2, 2).await;
    let base = serve(&app).await;
    let (_, token) = token(&app, Role::Admin).await;
    let cookie = log_in(&base, &token).await;
    let check = |path: &str, response: &reqwest::Response| {
        let h = response.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("style-src 'self'")
                && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with("text/html"),
            "{path}"
        );
    };
    for (path, status, words) in [
        ("/connexion", StatusCode::OK, "Clé d'accès"),
        ("/examens", StatusCode::OK, "Examens"),
        ("/inexistant", StatusCode::NOT_FOUND, "Page introuvable"),
        (
            "/examens/BAC26-PHILO/candidats",
            StatusCode::BAD_REQUEST,
            "Il manque le champ « établissement (UAI) »",
        ),
        (
            "/travaux?apres=99999999999999999999",
            StatusCode::UNPROCESSABLE_ENTITY,
            "Demande invalide",
        ),
        (
            "/examens/BAC26-PHILO/cloture",
            StatusCode::METHOD_NOT_ALLOWED,
            "Action impossible",
        ),
    ] {
        let response = client()
            .get(format!("{base}{path}"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .expect("get");
        check(path, &response);
        let got = response.status();
        let body = response.text().await.expect("body");
        // The extractors' own statuses vary (400 or 422): a client error.
        assert!(
            got == status || (status.is_client_error() && got.is_client_error()),
            "{path}: {got} {body}"
        );
        let body = body.replace("&#x27;", "'").replace("&#39;", "'");
        assert!(
            body.contains(words) && body.contains("/static/copiste.css"),
            "{path}: {body}"
        );
        for english in ["Failed to deserialize", "missing field"] {
            assert!(!body.contains(english), "{path}: {english} in {body}");
        }
    }
    // The API keeps its problem documents.
    let response = client()
        .get(format!("{base}/api/v1/jobs/not-a-job"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("api");
    assert!(response.status().is_client_error());
    assert!(
        !response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
}

/// A job's page offers "Relancer ce travail" for a cancelled job, but not
/// for a closure job of an exam Cyclades has published (cancelled by the
/// publication): its retry is refused, and a post of the form anyway is
/// answered with the refusal.
#[tokio::test]
async fn a_published_exams_closure_job_offers_no_retry() {
    let app = TestApp::new().await;
    app.import_demo(2, 2).await;
    let uai = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments")
        .remove(0);
    let closure = app.enqueue_closure(PHILO, &uai).await;
    let noop = app
        .enqueue(
            &copiste::jobs::noop::Noop::default(),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    copiste::jobs::admin::cancel(&app.app(), &Actor::admin("test"), noop)
        .await
        .expect("cancel");
    copiste::closure::publish(&app.app(), &Actor::admin("test"), PHILO)
        .await
        .expect("publish");
    assert_eq!(app.job(closure).await.status.as_str(), "cancelled");
    let base = serve(&app).await;
    let (_, token) = token(&app, Role::Admin).await;
    let cookie = log_in(&base, &token).await;
    let (status, body) = page(&base, &cookie, &format!("/travaux/{noop}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Relancer ce travail"), "{body}");
    let (status, body) = page(&base, &cookie, &format!("/travaux/{closure}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.contains("Relancer ce travail"), "{body}");
    let response = client()
        .post(format!("{base}/travaux/{closure}/relance"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(app.job(closure).await.status.as_str(), "cancelled");
}

/// A same-origin form post with the session `cookie`.
async fn post_form(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> StatusCode {
    client()
        .post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .expect("post")
        .status()
}

/// Pages are scoped for coordinators as for establishments: a coordinator
/// of academy A is refused (403) academy B's candidates, copies, closures
/// and jobs, and reaches its own; an admin reaches every one.
#[tokio::test]
async fn a_coordinator_is_refused_another_academys_pages_and_an_admin_is_not() {
    let app = TestApp::new().await;
    app.import_demo(3, 4).await;
    let crate::support::TwoAcademies {
        uai,
        academy_a,
        other,
        ..
    } = app.two_academies(PHILO).await;
    let own_job = app.enqueue_closure(E3C, &uai).await;
    let other_job = app.enqueue_closure(E3C, &other).await;
    let other_numero = app.first_numero(PHILO, &other).await;
    let base = serve(&app).await;
    let (_, coordinator) = token(&app, Role::Coordinator { academy: academy_a }).await;
    let coordinator = log_in(&base, &coordinator).await;
    let (_, admin) = token(&app, Role::Admin).await;
    let admin = log_in(&base, &admin).await;

    let of_b = [
        format!("/examens/{PHILO}/candidats?uai={other}&q=a"),
        format!("/examens/{PHILO}/copies/{other_numero}"),
        format!("/travaux/{other_job}"),
        format!("/travaux/{other_job}/evenements"),
    ];
    for path in &of_b {
        let (status, body) = page(&base, &coordinator, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("Accès refusé"), "{path}: {body}");
    }
    let forms = [
        (
            format!("/examens/{PHILO}/cloture"),
            vec![("establishment", other.as_str()), ("confirme", "1")],
        ),
        (
            format!("/examens/{PHILO}/zip"),
            vec![("uai", other.as_str())],
        ),
        (
            format!("/travaux/{other_job}/annulation"),
            vec![("confirme", "1")],
        ),
    ];
    for (path, form) in &forms {
        let status = post_form(&base, &coordinator, path, form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(app.job(other_job).await.status.as_str(), "queued");
    assert_eq!(app.counts().await.values().sum::<i64>(), 2, "no new job");

    // Its own academy's pages, and everything for an admin.
    for path in [
        format!("/examens/{PHILO}/candidats?uai={uai}&q=a"),
        format!("/travaux/{own_job}"),
        format!("/examens/{PHILO}"),
    ] {
        let (status, body) = page(&base, &coordinator, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    for path in [
        format!("/examens/{PHILO}/candidats?uai={other}&q=a"),
        format!("/travaux/{other_job}"),
        format!("/examens/{PHILO}"),
        "/travaux".to_owned(),
    ] {
        let (status, body) = page(&base, &admin, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // The copy: for an admin, the rule's page (not transmitted), not 403.
    let (status, body) = page(&base, &admin, &of_b[1]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let status = post_form(
        &base,
        &admin,
        &format!("/travaux/{other_job}/annulation"),
        &[("confirme", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.job(other_job).await.status.as_str(), "cancelled");
}

/// Every form's POST from another site is refused (403) before it reaches
/// its operation: told by `Sec-Fetch-Site: cross-site`, or by a foreign
/// `Origin` from a browser that does not send `Sec-Fetch-Site`.
#[tokio::test]
async fn every_form_refuses_a_cross_site_post() {
    let app = TestApp::new().await;
    app.import_demo(2, 2).await;
    let uai = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments")
        .remove(0);
    let job = app.enqueue_closure(PHILO, &uai).await;
    let base = serve(&app).await;
    let (_, admin_token) = token(&app, Role::Admin).await;
    let cookie = log_in(&base, &admin_token).await;
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/connexion".into(), vec![("cle", admin_token.as_str())]),
        ("/deconnexion".into(), vec![]),
        (
            format!("/examens/{PHILO}/cloture"),
            vec![("establishment", uai.as_str()), ("confirme", "1")],
        ),
        (
            format!("/examens/{PHILO}/relance"),
            vec![("establishment", uai.as_str()), ("confirme", "1")],
        ),
        (
            "/examens/BAC26-MATHS-H/harmonisation".into(),
            vec![("selection", "all"), ("confirme", "1")],
        ),
        (format!("/examens/{PHILO}/zip"), vec![("uai", uai.as_str())]),
        (format!("/travaux/{job}/relance"), vec![("confirme", "1")]),
        (
            format!("/travaux/{job}/annulation"),
            vec![("confirme", "1")],
        ),
    ];
    let from_elsewhere: [&[(&str, &str)]; 2] = [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://elsewhere.example"),
        ],
        &[("origin", "https://elsewhere.example")],
    ];
    for (path, form) in &forms {
        for headers in from_elsewhere {
            let mut request = client()
                .post(format!("{base}{path}"))
                .header(header::COOKIE, &cookie)
                .form(form);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("post");
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{path} with {headers:?}"
            );
            assert!(
                response.headers().get(header::SET_COOKIE).is_none(),
                "{path}: a cookie was set or cleared"
            );
        }
    }
    // Nothing happened: one job, still queued; the session still open.
    assert_eq!(app.counts().await.values().sum::<i64>(), 1);
    assert_eq!(app.job(job).await.status.as_str(), "queued");
    let (status, _) = page(&base, &cookie, "/travaux").await;
    assert_eq!(status, StatusCode::OK);
}

/// The coordinator's closure table of an academy of 130 establishments:
/// pages of 100 by UAI, a link to the next and back to the first, a
/// filter by state with each state's count, and a clear refusal of a
/// state or a cursor that is not one. The other academy's establishment
/// is never listed.
#[tokio::test]
async fn the_closure_table_pages_by_establishment_and_filters_by_state() {
    use crate::jobs_list::{catalogue, pool, uai};
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    // Establishments 1 and 2 are in A1, 3 in A2 (the catalogue's); 4 to
    // 131 join A1. Each has one candidate with a graded copy of E1.
    for n in 4..=131 {
        sqlx::query("INSERT INTO establishments (uai, name, academy_code) VALUES ($1, $2, 'A1')")
            .bind(uai(n).as_str())
            .bind(format!("Lycée {n}"))
            .execute(&pool)
            .await
            .expect("establishment");
    }
    sqlx::query(
        "WITH c AS (
             INSERT INTO candidates (session_code, numero, nom, prenom, establishment_uai)
             SELECT 'S', 'N' || e.uai, 'Nom', 'Prénom', e.uai FROM establishments e
             RETURNING id
         )
         INSERT INTO copies (exam_code, candidate_id, grade, page_keys, content_sha256)
         SELECT 'E1', id, 10, ARRAY['scan'], 'x' FROM c",
    )
    .execute(&pool)
    .await
    .expect("copies");
    // Three of A1's units closed with errors, one of A2's.
    sqlx::query(
        "INSERT INTO closure_units (exam_code, establishment_uai, state)
         SELECT 'E1', uai, 'closed_with_errors' FROM unnest($1::text[]) AS u (uai)",
    )
    .bind(vec![
        uai(5).to_string(),
        uai(50).to_string(),
        uai(120).to_string(),
        uai(3).to_string(),
    ])
    .execute(&pool)
    .await
    .expect("units");

    let base = serve(&app).await;
    let (_, token) = token(
        &app,
        Role::Coordinator {
            academy: "A1".into(),
        },
    )
    .await;
    let cookie = log_in(&base, &token).await;
    let rows = |body: &str| body.matches("<td data-label=\"Établissement\">").count();
    let (status, first) = page(&base, &cookie, "/examens/E1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(rows(&first), 100, "a page of 100 establishments");
    assert!(first.contains("tous (130)"), "every unit counted");
    assert!(first.contains("clôturé avec erreurs (3)"), "A1's three");
    assert!(first.contains("non clôturé (127)"), "the others");
    assert!(
        !first.contains(uai(3).as_str()),
        "A2's establishment is never listed"
    );
    // Every establishment of the academy is still offered to the search
    // and zip forms (130 options in each, and "every establishment").
    assert_eq!(first.matches("<option value=\"").count(), 2 * 130 + 1);
    let next = first
        .split("établissements suivants")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|rest| rest.split('"').next())
        .map(|href| href.replace("&#38;", "&").replace("&amp;", "&"))
        .expect("a link to the next page");
    let (status, second) = page(&base, &cookie, &next).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(rows(&second), 30, "the last 30");
    assert!(
        !second.contains("établissements suivants"),
        "no page after the last"
    );
    assert!(second.contains("premiers établissements"), "a way back");
    // The first page ends where the second starts, in UAI order.
    let last_of_first = first
        .rsplit("<td data-label=\"Établissement\">")
        .next()
        .expect("a row")
        .to_owned();
    assert!(!second.contains(&last_of_first), "no unit on both pages");

    let (status, errors) = page(&base, &cookie, "/examens/E1?etat=closed_with_errors").await;
    assert_eq!(status, StatusCode::OK, "{errors}");
    assert_eq!(rows(&errors), 3, "{errors}");
    for n in [5, 50, 120] {
        assert!(errors.contains(uai(n).as_str()), "establishment {n}");
    }
    let (status, closed) = page(&base, &cookie, "/examens/E1?etat=closed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&closed), 0);
    assert!(
        closed.contains("Aucun établissement dans cet état"),
        "{closed}"
    );

    let (status, body) = page(&base, &cookie, "/examens/E1?etat=ferme").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("état : ") && body.contains("ferme") && body.contains("pas un état"),
        "names the field and the value: {body}"
    );
    let (status, body) = page(&base, &cookie, "/examens/E1?apres=0000000Z").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("page : la lettre de contrôle"),
        "names the field: {body}"
    );
}
