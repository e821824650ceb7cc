//! Rendering copies, zips of an establishment's copies, search and
//! download links, checked with independent readers (lopdf, the zip
//! crate's reader).

use std::{collections::HashSet, io::Read as _, time::Duration};

use copiste::{
    db::render::CopyRow,
    domain::Uai,
    download::{self, Requested, token},
    op::{OpError, Refusal},
    render::{
        RenderOptions, RequestedOptions,
        zip::{ZipPlan, write_zip},
    },
};
use copiste_tools::demo_data::DemoDataOptions;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{Scans, TestApp, eventually, eventually_every, fast_queue, walk};

const PHILO: &str = "BAC26-PHILO";
const E3C: &str = "BAC26-E3C-HG";

fn config() -> serde_json::Value {
    let mut c = fast_queue();
    c["downloads"] = json!({"signing_key": "test-signing-key"});
    c
}

/// A session with real, distinct scans (`light` = one shared scan).
async fn app(light: bool) -> TestApp {
    let app = TestApp::with(config()).await;
    let scans = if light {
        Scans::Shared
    } else {
        Scans::Distinct
    };
    app.import_demo_with(session(), scans).await;
    app
}

/// The session of these tests: 3 establishments of 8 candidates, 2 pages
/// a copy.
fn session() -> DemoDataOptions {
    DemoDataOptions {
        establishments: 3,
        candidates: 8,
        pages: 2,
        seed: 2026,
    }
}

async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool")
}

/// Closes `exam` for every establishment (outbox exporters) and waits.
async fn close(app: &TestApp, exam: &str) {
    let worker = app.worker().await;
    let units = crate::ops::request_closure(app, exam, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    for u in units {
        let job = u.outcome.expect("not refused").job().expect("job");
        app.wait_status(job, "succeeded", 30).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
}

/// The numéro and establishment of the first candidate named `nom`, in
/// any exam. No `db` function answers this: the operations find
/// candidates of one establishment and exam.
async fn numero_of(app: &TestApp, nom: &str) -> (String, String) {
    sqlx::query_as(
        "SELECT numero, establishment_uai FROM candidates WHERE nom = $1 ORDER BY numero LIMIT 1",
    )
    .bind(nom)
    .fetch_one(&pool(app).await)
    .await
    .unwrap_or_else(|e| panic!("candidate {nom}: {e}"))
}

/// The copy of candidate `numero` for `exam`, as the renderer reads it.
async fn copy_row(app: &TestApp, exam: &str, numero: &str) -> CopyRow {
    copiste::db::render::copy(&app.db, exam, numero)
        .await
        .expect("read the copy")
        .unwrap_or_else(|| panic!("no copy of {exam} for {numero}"))
}

/// The first copy of `exam`, in numéro order, that `wanted` accepts.
async fn first_copy(app: &TestApp, exam: &str, wanted: impl Fn(&CopyRow) -> bool) -> CopyRow {
    let copies = copiste::db::closure::exam_copies(&app.db, exam, None, None)
        .await
        .expect("copies");
    for c in copies {
        let copy = copy_row(app, exam, &c.numero).await;
        if wanted(&copy) {
            return copy;
        }
    }
    panic!("no such copy of {exam}")
}

/// Text of page `n` (1-based) as lopdf extracts it.
fn page_text(pdf: &lopdf::Document, n: u32) -> String {
    pdf.extract_text(&[n]).expect("extract text")
}

#[tokio::test]
async fn a_copy_embeds_its_scans_byte_for_byte_and_renders_every_name() {
    let app = app(false).await;
    let core = app.app();
    let (numero, _) = numero_of(&app, "Kowalski").await;

    // Not transmitted yet: refused with the reason.
    let refused = crate::ops::copy_pdf(&core, PHILO, &numero, RequestedOptions::default())
        .await
        .expect("render");
    assert!(
        matches!(
            refused,
            Err(OpError::Refused(Refusal::NotTransmitted { .. }))
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .expect_err("refused")
            .to_string()
            .contains("not been transmitted")
    );

    close(&app, PHILO).await;
    for nom in ["Kowalski", "Nguyễn", "Şahin", "N'Diaye"] {
        let (numero, _) = numero_of(&app, nom).await;
        let bytes = crate::ops::copy_pdf(&core, PHILO, &numero, RequestedOptions::default())
            .await
            .expect("render")
            .expect("rendered");
        let pdf = lopdf::Document::load_mem(&bytes).expect("lopdf parses the PDF");
        let copy = copy_row(&app, PHILO, &numero).await;
        let keys = &copy.page_keys;
        let pages = pdf.get_pages();
        assert_eq!(
            pages.len(),
            keys.len() + 1,
            "a cover page and one page per scan"
        );

        // Every image stream is a scan, byte for byte, as DCTDecode.
        let mut images = Vec::new();
        let mut font_bytes = 0;
        for object in pdf.objects.values() {
            if let Ok(stream) = object.as_stream() {
                let subtype = stream.dict.get(b"Subtype").and_then(|s| s.as_name()).ok();
                if subtype == Some(b"Image".as_slice()) {
                    assert_eq!(
                        stream.dict.get(b"Filter").and_then(|f| f.as_name()).ok(),
                        Some(b"DCTDecode".as_slice())
                    );
                    images.push(stream.content.clone());
                }
                if stream.dict.get(b"Length1").is_ok() {
                    font_bytes += stream.content.len();
                }
            }
        }
        assert_eq!(images.len(), keys.len());
        for key in keys {
            let scan = app.storage.get(key).await.expect("scan");
            assert!(
                images.iter().any(|i| i.as_slice() == scan.as_ref()),
                "scan {key} is embedded as is"
            );
        }
        // WinAnsi names use Helvetica, built into viewers; others embed
        // a DejaVu subset of a few tens of KB.
        let prenom = &copy.prenom;
        // Latin-1 is within WinAnsi (the cover's own words are too).
        let win_ansi = format!("{nom}{prenom}")
            .chars()
            .all(|c| u32::from(c) <= 0xFF);
        assert!(
            nom != "N'Diaye" || win_ansi,
            "the dataset has a WinAnsi name: {nom} {prenom}"
        );
        assert!(
            if win_ansi {
                font_bytes == 0
            } else {
                font_bytes > 0 && font_bytes <= 40_000
            },
            "{nom}: the font adds {font_bytes} bytes"
        );

        let cover = page_text(&pdf, 1);
        assert!(cover.contains(nom), "{nom} on the cover: {cover}");
        assert!(cover.contains(&numero));
    }
}

#[tokio::test]
async fn switches_shape_the_cover_and_e3c_refuses_them() {
    let app = app(true).await;
    close(&app, PHILO).await;
    close(&app, E3C).await;
    let core = app.app();
    let numero = first_copy(&app, PHILO, |c| {
        !c.absent
            && c.appreciation.is_some()
            && c.grading_details.as_array().is_some_and(|d| !d.is_empty())
    })
    .await
    .numero;
    let cover = |bytes: Vec<u8>| {
        let pdf = lopdf::Document::load_mem(&bytes).expect("parse");
        page_text(&pdf, 1)
    };
    let all = crate::ops::copy_pdf(&core, PHILO, &numero, RequestedOptions::default())
        .await
        .expect("render")
        .expect("rendered");
    let all = cover(all);
    assert!(
        all.contains("Appréciation") && all.contains("Détail de la notation"),
        "{all}"
    );
    let none = RequestedOptions {
        details: false,
        appreciation: false,
        annotations: false,
    };
    let bare = crate::ops::copy_pdf(&core, PHILO, &numero, none)
        .await
        .expect("render")
        .expect("rendered");
    let bare = cover(bare);
    assert!(
        !bare.contains("Appréciation") && !bare.contains("Détail"),
        "{bare}"
    );
    assert!(bare.contains("Note"), "{bare}");

    let e3c = first_copy(&app, E3C, |c| !c.absent).await.numero;
    let refused = crate::ops::copy_pdf(&core, E3C, &e3c, none)
        .await
        .expect("render");
    let message = refused.expect_err("E3C switches are fixed").to_string();
    assert!(
        message.contains("E3C") && message.contains("appreciation"),
        "{message}"
    );
    crate::ops::copy_pdf(&core, E3C, &e3c, RequestedOptions::default())
        .await
        .expect("render")
        .expect("E3C with every switch on");
    let r = crate::ops::zip_request(&core, E3C, &Uai::from_number(750_001), none, "test")
        .await
        .expect("request");
    assert!(
        matches!(r, Err(OpError::Refused(Refusal::E3cSwitches(_)))),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_copy_opened_again_comes_from_memory_until_its_content_changes() {
    let app = app(true).await;
    close(&app, PHILO).await;
    let core = app.app();
    let (numero, _) = numero_of(&app, "Kowalski").await;
    let render = || crate::ops::copy_pdf(&core, PHILO, &numero, RequestedOptions::default());
    let first = render().await.expect("render").expect("rendered");
    let held = core.rendered.bytes();
    assert!(held >= first.len() as u64, "the PDF is kept ({held} bytes)");
    assert_eq!(render().await.expect("render").expect("rendered"), first);
    assert_eq!(
        core.rendered.bytes(),
        held,
        "the second request rendered nothing new"
    );

    // The exam office corrects the appreciation (by hand: no operation
    // changes one copy): the next request shows it.
    sqlx::query(
        "UPDATE copies c SET appreciation = 'Corrigée après relecture'
         FROM candidates ca WHERE ca.id = c.candidate_id AND ca.numero = $1 AND c.exam_code = $2",
    )
    .bind(&numero)
    .bind(PHILO)
    .execute(&pool(&app).await)
    .await
    .expect("update");
    let second = render().await.expect("render").expect("rendered");
    assert_ne!(second, first, "the changed copy is rendered again");
    let cover = page_text(&lopdf::Document::load_mem(&second).expect("parse"), 1);
    assert!(cover.contains("Corrigée après relecture"), "{cover}");
}

#[tokio::test]
async fn search_ignores_case_accents_and_punctuation() {
    let app = app(true).await;
    let (_, uai) = numero_of(&app, "N'Diaye").await;
    let page = |exam: &'static str, terms: &[&str], limit: i64, offset: i64| {
        let query = terms.join(" ");
        let core = app.app();
        let uai = Uai::parse(&uai).expect("uai");
        async move {
            crate::ops::search(&core, exam, &uai, &query, limit, offset)
                .await
                .expect("search")
        }
    };
    let find = |terms: &[&str]| {
        let page = page(PHILO, terms, 200, 0);
        async move { page.await.expect("not refused").candidates }
    };
    let found = find(&["ndiaye"]).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].nom, "N'Diaye");
    assert!(!found[0].downloadable, "not transmitted yet");
    let found = find(&["HELENE"]).await;
    assert!(found.iter().any(|f| f.prenom == "Hélène"), "{found:?}");
    let numero = &find(&["ndiaye"]).await[0].numero;
    let found = find(&[&numero[4..10]]).await;
    assert!(
        found.iter().any(|f| &f.numero == numero),
        "by part of the numéro"
    );
    assert!(find(&["zzzz-nobody"]).await.is_empty());
    // LIKE wildcards are no wildcards; a query of punctuation only has
    // nothing to search for and says so.
    assert!(find(&["nd%ye"]).await.is_empty());
    for nothing in [&["%"][..], &["_"], &["'"], &[""], &["%", "-"]] {
        let refused = page(PHILO, nothing, 200, 0).await;
        assert!(
            matches!(&refused, Err(OpError::Invalid { field: "query", .. })),
            "{nothing:?}: {refused:?}"
        );
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("nothing to search for"), "{message}");
    }
    // Punctuation beside a real term is ignored.
    assert_eq!(find(&["ndiaye", "%"]).await.len(), 1);
    // An unknown exam is refused, not "no candidate".
    let refused = page("BAC26-NOPE", &["ndiaye"], 200, 0).await;
    assert_eq!(
        refused.expect_err("unknown exam").to_string(),
        "unknown exam BAC26-NOPE"
    );
    // Pages: the total and whether more remain.
    let all = find(&["a"]).await;
    assert!(all.len() >= 3, "{all:?}");
    let first = page(PHILO, &["a"], 2, 0).await.expect("not refused");
    assert_eq!(first.total, all.len() as i64);
    assert!(first.more && first.candidates.len() == 2);
    let last = page(PHILO, &["a"], 2, all.len() as i64 - 1)
        .await
        .expect("not refused");
    assert!(!last.more && last.candidates.len() == 1);
    assert_eq!(last.candidates[0].numero, all[all.len() - 1].numero);
    close(&app, PHILO).await;
    assert!(find(&["ndiaye"]).await[0].downloadable);
}

#[tokio::test]
async fn an_establishment_zip_holds_every_transmitted_copy_and_is_served_by_link() {
    let app = app(true).await;
    close(&app, PHILO).await;
    // Two copies fail (broken by hand): one scan is corrupt, one is missing.
    let (corrupt, uai) = numero_of(&app, "Martin").await;
    app.storage
        .put(
            "scans/corrupt.jpg",
            bytes::Bytes::from_static(b"not a jpeg at all"),
        )
        .await
        .expect("put");
    let p = pool(&app).await;
    sqlx::query(
        "UPDATE copies SET page_keys = ARRAY['scans/corrupt.jpg'] FROM candidates ca
         WHERE ca.id = copies.candidate_id AND ca.numero = $1 AND copies.exam_code = $2",
    )
    .bind(&corrupt)
    .bind(PHILO)
    .execute(&p)
    .await
    .expect("corrupt");
    let missing = first_copy(&app, PHILO, |c| {
        c.establishment_uai.as_str() == uai && c.numero != corrupt && !c.absent
    })
    .await
    .numero;
    sqlx::query(
        "UPDATE copies SET page_keys = ARRAY['scans/missing.jpg'] FROM candidates ca
         WHERE ca.id = copies.candidate_id AND ca.numero = $1 AND copies.exam_code = $2",
    )
    .bind(&missing)
    .bind(PHILO)
    .execute(&p)
    .await
    .expect("missing");

    // A candidate whose name a spreadsheet would run as a formula (by
    // hand: the import takes names as they come).
    let formula = "=HYPERLINK(\"http://evil.example/\",\"x\")";
    sqlx::query(
        "UPDATE candidates SET nom = $1 WHERE numero = (
             SELECT ca.numero FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
             WHERE c.exam_code = $2 AND ca.establishment_uai = $3 AND ca.numero NOT IN ($4, $5)
               AND NOT c.absent ORDER BY 1 LIMIT 1)",
    )
    .bind(formula)
    .bind(PHILO)
    .bind(&uai)
    .bind(&corrupt)
    .bind(&missing)
    .execute(&p)
    .await
    .expect("formula name");
    sqlx::query("UPDATE candidates SET prenom = '@SUM(A1)' WHERE numero = $1")
        .bind(&corrupt)
        .execute(&p)
        .await
        .expect("formula prénom");

    let core = app.app();
    let uai = Uai::parse(&uai).expect("uai");
    // Both requests before any worker runs: a double click while the job
    // is queued is that job (once it has failed, a request builds anew).
    let first = crate::ops::zip_request(&core, PHILO, &uai, RequestedOptions::default(), "test")
        .await
        .expect("request")
        .expect("not refused");
    let Requested::Building { job, new: true } = first else {
        panic!("expected a new job: {first:?}")
    };
    let again = crate::ops::zip_request(&core, PHILO, &uai, RequestedOptions::default(), "test")
        .await
        .expect("request")
        .expect("not refused");
    assert!(
        matches!(again, Requested::Building { job: j, new: false } if j == job),
        "a second request is the same job: {again:?}"
    );
    let worker = app.worker().await;
    let row = app.wait_status(job, "failed", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let result = row.result.expect("partial result");
    assert_eq!(
        result["failures"].as_array().expect("failures").len(),
        2,
        "{result}"
    );

    let links = crate::ops::zip_links(&core, PHILO, &uai, RequestedOptions::default())
        .await
        .expect("links")
        .expect("not refused")
        .expect("a zip is ready");
    assert_eq!(links.len(), 1);
    let again = crate::ops::zip_request(&core, PHILO, &uai, RequestedOptions::default(), "test")
        .await
        .expect("request")
        .expect("not refused");
    assert_eq!(
        again,
        Requested::Ready(links.clone()),
        "a valid zip is returned, not rebuilt"
    );

    // Serve it and fetch it through the link.
    let app_router = download::serve::router(app.storage.clone(), b"test-signing-key".as_slice());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app_router).await });
    let url = links[0]
        .url
        .replace("http://127.0.0.1:8080", &format!("http://{addr}"));
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let response = client.get(&url).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"].to_str().expect("len"),
        links[0].bytes.to_string()
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"")
            && disposition.contains(".zip\"; filename*=UTF-8''"),
        "{disposition}"
    );
    let body = response.bytes().await.expect("body");
    let ranged = client
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.expect("body").as_ref(), &body[10..20]);
    let tampered = format!("{}x", url);
    assert_eq!(
        client.get(&tampered).send().await.expect("get").status(),
        403
    );
    // A link signed with the test's key for `key`, valid for `secs`.
    let get = |key: &str, secs: i64| {
        let grant = token::sign(
            &token::Grant {
                key: key.to_owned(),
                establishment: uai.to_string(),
                expires: chrono::Utc::now().timestamp() + secs,
            },
            b"test-signing-key",
        );
        client
            .get(format!("http://{addr}/downloads/{grant}"))
            .send()
    };
    assert_eq!(
        get("downloads/any.zip", -1).await.expect("get").status(),
        410
    );
    // A validly signed token for anything but a finished download object
    // (a scan, a key with `..`, a build's staging part) is refused.
    let scan = first_copy(&app, PHILO, |c| {
        !c.page_keys.is_empty() && c.numero != corrupt && c.numero != missing
    })
    .await
    .page_keys[0]
        .clone();
    assert!(app.storage.size(&scan).await.expect("head").is_some());
    app.storage
        .put(
            "downloads/.staging/j/x.zip",
            bytes::Bytes::from_static(b"PK"),
        )
        .await
        .expect("put");
    for key in [
        scan.as_str(),
        "downloads/../scans/x.jpg",
        "downloads/.staging/j/x.zip",
    ] {
        assert_eq!(get(key, 600).await.expect("get").status(), 403, "{key}");
    }
    // The exam code reaches the file name: it cannot break the header.
    let odd = "downloads/x/HG \"q\"; filename=evil.exe_Gé.zip";
    app.storage
        .put(odd, bytes::Bytes::from_static(b"PK"))
        .await
        .expect("put");
    let response = get(odd, 600).await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"]
            .to_str()
            .expect("ascii"),
        "attachment; filename=\"HG__q___filename_evil.exe_G_.zip\"; \
         filename*=UTF-8''HG%20%22q%22%3B%20filename%3Devil.exe_G%C3%A9.zip"
    );
    server.abort();

    // `downloads.link_ttl_secs` applies when a link is made, within the
    // zip's own expiry.
    let short = {
        let mut config = app.config.clone();
        config.downloads.link_ttl_secs = 60;
        copiste::app::App::new(config, app.db.clone(), app.storage.clone()).expect("core")
    };
    let before = chrono::Utc::now();
    let short_links = crate::ops::zip_links(&short, PHILO, &uai, RequestedOptions::default())
        .await
        .expect("links")
        .expect("not refused")
        .expect("a zip is ready");
    let expires = short_links[0].expires_at;
    assert!(
        expires >= before + chrono::Duration::seconds(59)
            && expires <= chrono::Utc::now() + chrono::Duration::seconds(60),
        "a link made with a 60 s TTL expires at {expires}"
    );
    assert!(links[0].expires_at > expires + chrono::Duration::days(6));

    // The zip, read by the zip crate: every entry's CRC checked.
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body.to_vec())).expect("zip");
    let mut names = HashSet::new();
    let mut pdfs = 0;
    let mut manifest = String::new();
    let mut errors = String::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).expect("entry");
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        let name = entry.name().expect("entry name").into_owned();
        assert!(
            name.is_ascii() && !name.contains('/') && !name.contains(".."),
            "{name}"
        );
        assert!(names.insert(name.clone()), "duplicate entry {name}");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("CRC checked on read");
        match name.as_str() {
            "manifest.csv" => manifest = String::from_utf8(data).expect("utf8"),
            "errors.csv" => errors = String::from_utf8(data).expect("utf8"),
            _ => {
                pdfs += 1;
                lopdf::Document::load_mem(&data).expect("each entry is a PDF");
            }
        }
    }
    let transmitted = copiste::db::closure::unit_copies(&app.db, PHILO, uai.as_str())
        .await
        .expect("copies")
        .len() as i64;
    assert_eq!(pdfs as i64, transmitted - 2);
    assert_eq!(
        manifest.lines().count() as i64,
        1 + transmitted - 2,
        "{manifest}"
    );
    assert!(
        errors.contains(&corrupt) && errors.contains(&missing),
        "{errors}"
    );
    assert!(
        errors.contains("not a JPEG") && errors.contains("does not exist"),
        "{errors}"
    );
    // Cells a spreadsheet would run as formulas are neutralised.
    let cells = |csv: &str| -> Vec<String> {
        csv::Reader::from_reader(csv.as_bytes())
            .records()
            .flat_map(|r| {
                r.expect("csv record")
                    .iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let manifest_cells = cells(&manifest);
    assert!(
        manifest_cells.contains(&format!("'{formula}")),
        "{manifest}"
    );
    assert!(
        manifest_cells
            .iter()
            .chain(cells(&errors).iter())
            .all(|c| !c.starts_with(['=', '+', '-', '@', '\t', '\r'])),
        "{manifest}\n{errors}"
    );
    assert!(cells(&errors).contains(&"'@SUM(A1)".to_owned()), "{errors}");
}

#[tokio::test]
async fn a_failure_mid_upload_leaves_nothing_at_the_zip_keys() {
    let app = app(true).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, &uai)
        .await
        .expect("rows");
    assert!(rows.len() >= 4);
    let plan = ZipPlan {
        key_stem: "downloads/test/broken".into(),
        staging_dir: "downloads/.staging/test".into(),
        options: RenderOptions::for_exam(
            PHILO,
            copiste::domain::ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options"),
        // One copy per part, so that finished parts exist before the failure.
        max_part_bytes: 1,
    };
    // The zip thread fails once it wrote 3 entries (once only: the second
    // build below goes through).
    copiste::render::zip::failpoints::after_entries(&plan.staging_dir, 3).expect("armed");
    // While the zip is built, every object it has written is in the
    // staging folder: none is at a final key.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let progress = {
        let storage = app.storage.clone();
        let seen = seen.clone();
        move |_, _| -> futures::future::BoxFuture<'static, ()> {
            let storage = storage.clone();
            let seen = seen.clone();
            Box::pin(async move {
                let listed = storage.list("downloads/").await.expect("list");
                seen.lock()
                    .expect("lock")
                    .extend(listed.into_iter().map(|l| l.key));
            })
        }
    };
    let error = write_zip(&app.storage, rows.clone(), &plan, &progress)
        .await
        .expect_err("injected failure");
    assert!(error.to_string().contains("injected"), "{error}");
    let left: Vec<_> = walk(&app.dir.path().join("objects/downloads"));
    assert!(left.is_empty(), "nothing remains: {left:?}");

    // Without the fault, the same plan writes one part per copy.
    let outcome = write_zip(&app.storage, rows.clone(), &plan, &progress)
        .await
        .expect("zip");
    assert_eq!(outcome.parts.len(), rows.len());
    assert!(outcome.parts[1].key.ends_with("_part2.zip"));
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|k| k.starts_with("downloads/.staging/test/")),
        "parts were seen while staged: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|k| k.starts_with("downloads/.staging/test/")),
        "no object of an unfinished zip at a final key: {seen:?}"
    );
    // Once finished, every part is at its final key, nothing is staged.
    let listed: Vec<String> = app
        .storage
        .list("downloads/")
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.key)
        .collect();
    let mut expected: Vec<String> = outcome.parts.iter().map(|p| p.key.clone()).collect();
    let mut listed_sorted = listed.clone();
    expected.sort();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected);
}

#[tokio::test]
async fn what_a_killed_zip_build_leaves_is_swept_after_the_delay() {
    let app = app(true).await;
    let core = app.app();
    let (_, uai) = numero_of(&app, "Martin").await;
    let killed = uuid::Uuid::now_v7();
    // A build killed mid-part whose upload was never recorded: its local
    // staging file (`…zip#<upload id>`) stays.
    app.storage
        .start_resumable_upload(&format!("downloads/.staging/{killed}/X_part3.zip"))
        .await
        .expect("upload");
    // Its finished parts, staged; and one moved to its final key whose
    // record was never written.
    let png = bytes::Bytes::from_static(b"PK\x03\x04 a part");
    for key in [
        format!("downloads/.staging/{killed}/X_part2.zip"),
        format!("downloads/{PHILO}/{uai}/d1a1n1/{killed}/X.zip"),
    ] {
        app.storage.put(&key, png.clone()).await.expect("put");
    }
    // A recorded zip, and the staging folder of a build still queued.
    let recorded = format!("downloads/{PHILO}/{uai}/d1a1n1/recorded/X.zip");
    app.storage.put(&recorded, png.clone()).await.expect("put");
    // Recorded without a job (`insert_download` takes the job that built
    // it).
    sqlx::query(
        "INSERT INTO downloads (id, exam_code, establishment_uai, options, parts, copies, errors, expires_at)
         VALUES (gen_random_uuid(), $1, $2, 'd1a1n1', jsonb_build_array(jsonb_build_object(
                 'key', $3::text, 'bytes', 18, 'sha256', '-')), 1, 0, now() + interval '1 day')",
    )
    .bind(PHILO)
    .bind(&uai)
    .bind(&recorded)
    .execute(&pool(&app).await)
    .await
    .expect("download");
    let queued = app
        .enqueue(
            &default_zip(PHILO, &uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let building = format!("downloads/.staging/{queued}/X.zip");
    app.storage.put(&building, png.clone()).await.expect("put");

    let files = || {
        let mut f: Vec<String> = walk(&app.dir.path().join("objects/downloads"))
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    };
    let before = files();
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(
        before.iter().any(|f| f.contains("X_part3.zip#")),
        "{before:?}"
    );

    // Younger than the delay: kept.
    let deleted = copiste::jobs::housekeeping::sweep_abandoned(&core, Duration::from_secs(3600))
        .await
        .expect("sweep");
    assert_eq!(deleted, 0);
    assert_eq!(files(), before);

    // Past the delay: only the recorded zip and the queued build's part stay.
    let deleted = copiste::jobs::housekeeping::sweep_abandoned(&core, Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(deleted, 3, "{:?}", files());
    let after = files();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().any(|f| f.ends_with("recorded/X.zip")),
        "{after:?}"
    );
    assert!(
        after.iter().any(|f| f.contains(&queued.to_string())),
        "{after:?}"
    );

    // Once the build is cancelled, its staging folder goes too.
    copiste::db::jobs::cancel(&app.db, queued, "test")
        .await
        .expect("cancel")
        .expect("a known job");
    copiste::jobs::housekeeping::sweep_abandoned(&core, Duration::ZERO)
        .await
        .expect("sweep");
    let after = files();
    assert_eq!(after.len(), 1, "{after:?}");
    // The housekeeping job applies `downloads.abandoned_after_secs`, by
    // default hours: a fresh object survives it.
    assert_eq!(app.config.downloads.abandoned_after_secs, 21_600);
}

#[tokio::test]
async fn a_zip_whose_key_is_invalid_dies_at_once() {
    let app = app(true).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    // An exam code that makes no valid object key (written by hand: the
    // import refuses it), its copies transmitted.
    let evil = "EVIL/../x";
    let p = pool(&app).await;
    sqlx::query(
        "INSERT INTO exams (code, session_code, subject, kind)
         SELECT $1, session_code, subject, kind FROM exams WHERE code = $2",
    )
    .bind(evil)
    .bind(PHILO)
    .execute(&p)
    .await
    .expect("exam");
    sqlx::query("UPDATE copies SET exam_code = $1 WHERE exam_code = $2")
        .bind(evil)
        .bind(PHILO)
        .execute(&p)
        .await
        .expect("copies");
    let job = app
        .enqueue(
            &default_zip(evil, &uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let worker = app.worker().await;
    let row = app.wait_status(job, "dead", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(row.attempts, 1, "not retried: {:?}", row.last_error);
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("invalid object key"), "{error}");
    assert!(walk(&app.dir.path().join("objects/downloads")).is_empty());
}

/// A local S3-compatible server (moto), stopped when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new("python3")
        .args(["-m", "moto.server", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto is installed (python3 -m pip install 'moto[server]'; scripts/test does it)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    eventually_every(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            match client.get(&moto.endpoint).send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("moto did not start on {}: {e}", moto.endpoint)),
            }
        },
    )
    .await;
    moto
}

/// What the S3 tests need, said where they are skipped (`#[ignore]`)
/// and where one is run without it.
const NEEDS_MOTO: &str = "needs moto and MOTO_S3_TESTS=1 with dummy AWS credentials: \
     scripts/test installs moto and runs these tests with --ignored";

/// A moto server with `bucket` created, and the test configuration that
/// stores objects there. The S3 tests are ignored by default, and
/// scripts/test runs them with `--ignored` once it has installed moto and
/// set `MOTO_S3_TESTS` with dummy AWS credentials.
async fn on_moto(bucket: &str) -> (Moto, serde_json::Value) {
    assert!(std::env::var_os("MOTO_S3_TESTS").is_some(), "{NEEDS_MOTO}");
    let moto = moto().await;
    let created = copiste::tls::http_client()
        .build()
        .expect("an HTTP client")
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success(), "{}", created.status());
    let mut config = config();
    config["storage"] = json!({
        "kind": "s3",
        "s3": {"bucket": bucket, "region": "us-east-1", "endpoint": moto.endpoint, "allow_http": true}
    });
    (moto, config)
}

#[tokio::test]
#[ignore = "needs moto (S3): scripts/test runs it with --ignored"]
async fn on_s3_zips_go_through_multipart_uploads_and_links_are_presigned() {
    let bucket = "copiste-test";
    let (moto, config) = on_moto(bucket).await;
    let app = TestApp::with(config).await;
    assert!(app.storage.describe().starts_with("s3://"));
    app.import_demo_seeded(3, 6, 5).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    let uai = Uai::parse(&uai).expect("uai");
    let core = app.app();
    let worker = app.worker().await;
    let Requested::Building { job, .. } =
        crate::ops::zip_request(&core, PHILO, &uai, RequestedOptions::default(), "test")
            .await
            .expect("request")
            .expect("not refused")
    else {
        panic!("a job builds the zip")
    };
    app.wait_status(job, "succeeded", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let links = crate::ops::zip_links(&core, PHILO, &uai, RequestedOptions::default())
        .await
        .expect("links")
        .expect("not refused")
        .expect("ready");
    let url = &links[0].url;
    assert!(
        url.starts_with(&format!("{}/{bucket}/downloads/", moto.endpoint))
            && url.contains("X-Amz-Signature=")
            && url.contains("X-Amz-Expires="),
        "a presigned URL: {url}"
    );
    let body = copiste::tls::http_client()
        .build()
        .expect("an HTTP client")
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len() as u64, links[0].bytes);
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&body))
    };
    assert_eq!(sha, links[0].sha256);
    zip::ZipArchive::new(std::io::Cursor::new(body.to_vec())).expect("a zip");

    // A failed multipart upload leaves nothing on S3 either.
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, uai.as_str())
        .await
        .expect("rows");
    let plan = ZipPlan {
        key_stem: "downloads/test/broken".into(),
        staging_dir: "downloads/.staging/broken".into(),
        options: RenderOptions::for_exam(
            PHILO,
            copiste::domain::ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options"),
        max_part_bytes: 1,
    };
    copiste::render::zip::failpoints::after_entries(&plan.staging_dir, 2).expect("armed");
    let progress = |_, _| -> futures::future::BoxFuture<'static, ()> { Box::pin(async {}) };
    write_zip(&app.storage, rows, &plan, &progress)
        .await
        .expect_err("injected failure");
    for key in [
        "downloads/test/broken.zip",
        "downloads/test/broken_part2.zip",
    ] {
        assert_eq!(app.storage.size(key).await.expect("head"), None, "{key}");
    }
    let left = app.storage.list("downloads/.staging/").await.expect("list");
    assert!(left.is_empty(), "nothing staged remains: {left:?}");
}

#[test]
fn download_link_takes_json_and_search_takes_pages() {
    use clap::Parser as _;
    let parse = |args: &[&str]| {
        copiste_cli::Cli::try_parse_from(std::iter::once("copiste").chain(args.iter().copied()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let uai = Uai::from_number(750_001).to_string();
    parse(&[
        "download",
        "link",
        "--exam",
        PHILO,
        "--establishment",
        &uai,
        "--json",
    ])
    .expect("download link --json");
    parse(&[
        "candidates",
        "search",
        "--exam",
        PHILO,
        "--establishment",
        &uai,
        "--limit",
        "20",
        "--offset",
        "40",
        "--json",
        "martin",
    ])
    .expect("candidates search with a page");
    let e = parse(&[
        "candidates",
        "search",
        "--exam",
        PHILO,
        "--establishment",
        &uai,
        "--limit",
        "0",
        "martin",
    ])
    .expect_err("a zero limit");
    assert!(e.contains("--limit"), "{e}");
}

/// The bulk-render job of a ponctuel exam's zip with the default options.
fn default_zip(exam: &str, uai: &str) -> copiste::jobs::bulk_render::BulkRender {
    copiste::jobs::bulk_render::BulkRender {
        exam: exam.into(),
        establishment: Uai::parse(uai).expect("uai"),
        options: RenderOptions::for_exam(
            exam,
            copiste::domain::ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options"),
    }
}

/// The plan of a test zip: one copy per part.
fn small_parts(name: &str) -> ZipPlan {
    ZipPlan {
        key_stem: format!("downloads/test/{name}"),
        staging_dir: format!("downloads/.staging/{name}"),
        options: RenderOptions::for_exam(
            PHILO,
            copiste::domain::ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options"),
        max_part_bytes: 1,
    }
}

fn no_progress(_: u64, _: u64) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async {})
}

/// The SHA-256 of every part of a finished zip, read back from the store.
async fn part_digests(app: &TestApp, parts: &[copiste::render::zip::Part]) -> Vec<String> {
    let mut out = Vec::new();
    for part in parts {
        let bytes = app.storage.get(&part.key).await.expect("part");
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        assert_eq!(sha, part.sha256, "{} is what was recorded", part.key);
        assert_eq!(bytes.len() as u64, part.bytes);
        out.push(sha);
    }
    out
}

#[tokio::test]
async fn two_builds_of_the_same_zip_are_the_same_bytes() {
    let app = app(false).await;
    close(&app, PHILO).await;
    let (numero, uai) = numero_of(&app, "Martin").await;
    // One copy, twice: the same PDF.
    let core = app.app();
    let pdf = || async {
        crate::ops::copy_pdf(&core, PHILO, &numero, RequestedOptions::default())
            .await
            .expect("render")
            .expect("rendered")
    };
    let (a, b) = (pdf().await, pdf().await);
    assert!(a == b, "two renders of one copy differ");
    // The zip, built twice (render threads in parallel, in whatever
    // order), a second apart: the same bytes.
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, &uai)
        .await
        .expect("rows");
    let plan = ZipPlan {
        max_part_bytes: 1 << 30,
        ..small_parts("first")
    };
    let first = write_zip(&app.storage, rows.clone(), &plan, &no_progress)
        .await
        .expect("zip");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let plan = ZipPlan {
        max_part_bytes: 1 << 30,
        ..small_parts("second")
    };
    let second = write_zip(&app.storage, rows.clone(), &plan, &no_progress)
        .await
        .expect("zip");
    assert_eq!(first.parts.len(), 1);
    assert_eq!(
        part_digests(&app, &first.parts).await,
        part_digests(&app, &second.parts).await,
        "two builds of the same zip have the same SHA-256"
    );
}

#[tokio::test]
async fn a_zip_build_resumes_after_its_last_staged_part_with_the_same_bytes() {
    use copiste::render::zip::{
        Resume, ZipProgress,
        failpoints::{self, Action},
        write_zip_resumable,
    };
    let app = app(true).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, &uai)
        .await
        .expect("rows");
    assert!(rows.len() >= 5, "{} copies", rows.len());
    // The reference: built without interruption.
    let reference = write_zip(
        &app.storage,
        rows.clone(),
        &small_parts("ref"),
        &no_progress,
    )
    .await
    .expect("zip");
    let reference = part_digests(&app, &reference.parts).await;
    assert_eq!(reference.len(), rows.len(), "one copy per part");

    let recorded = std::sync::Arc::new(std::sync::Mutex::new(None::<ZipProgress>));
    let save = {
        let recorded = recorded.clone();
        move |p: &ZipProgress| -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
            *recorded.lock().expect("lock") = Some(p.clone());
            Box::pin(async { Ok(()) })
        }
    };
    let plan = small_parts("resumed");
    let run = |n: u32, from: Option<ZipProgress>| {
        let rows = rows.clone();
        let (plan, save, storage) = (&plan, &save, &app.storage);
        async move {
            write_zip_resumable(
                storage,
                rows,
                plan,
                &no_progress,
                Some(Resume { from, run: n, save }),
            )
            .await
        }
    };
    // Run 1 fails once 3 parts are staged: they stay staged, recorded,
    // and nothing is at a final key.
    failpoints::after_parts(&plan.staging_dir, 3, Action::Fail).expect("armed");
    let error = run(1, None).await.expect_err("injected failure");
    assert!(error.to_string().contains("injected"), "{error:#}");
    let after_1 = recorded.lock().expect("lock").clone().expect("recorded");
    assert_eq!(after_1.parts.len(), 3);
    let staged = app
        .storage
        .list("downloads/.staging/resumed/")
        .await
        .expect("list");
    assert_eq!(
        staged.iter().filter(|l| !l.partial).count(),
        3,
        "{staged:?}"
    );
    assert!(
        app.storage
            .list("downloads/test/resumed")
            .await
            .expect("list")
            .is_empty()
    );

    // Run 2 goes on from part 4 and fails once 5 are staged.
    failpoints::after_parts(&plan.staging_dir, 5, Action::Fail).expect("armed");
    run(2, Some(after_1)).await.expect_err("injected failure");
    let after_2 = recorded.lock().expect("lock").clone().expect("recorded");
    let runs: Vec<u32> = after_2.parts.iter().map(|p| p.run).collect();
    assert_eq!(runs, [1, 1, 1, 2, 2], "run 2 resumed after part 3");

    // Part 2 disappears (e.g. swept): run 3 builds it again, and what
    // follows it, keeping part 1 only.
    app.storage
        .delete(&after_2.parts[1].key)
        .await
        .expect("delete");
    let outcome = run(3, Some(after_2)).await.expect("zip");
    assert_eq!(outcome.resumed_parts, 1);
    let after_3 = recorded.lock().expect("lock").clone().expect("recorded");
    assert_eq!(after_3.parts[0].run, 1);
    assert!(after_3.parts[1..].iter().all(|p| p.run == 3), "{after_3:?}");
    assert_eq!(
        part_digests(&app, &outcome.parts).await,
        reference,
        "the resumed zip is the uninterrupted one, byte for byte"
    );
    assert_eq!(outcome.copies as usize, rows.len());
    // Nothing stays staged once the zip is published.
    let staged = app
        .storage
        .list("downloads/.staging/resumed/")
        .await
        .expect("list");
    assert!(staged.iter().all(|l| l.partial), "{staged:?}");
}

/// Waits until a build stopped at the failpoint `armed` (it hangs there,
/// doing nothing more, as a killed process would).
async fn wait_reached(armed: &copiste::render::zip::failpoints::Armed) {
    eventually(Duration::from_secs(60), || async {
        armed.reached().then_some(())
    })
    .await
}

/// Waits until job `id`'s checkpoint records `parts` staged parts.
async fn wait_parts(app: &TestApp, id: uuid::Uuid, parts: usize) {
    eventually(Duration::from_secs(60), || async {
        let checkpoint = copiste::db::jobs::checkpoint(&app.db, id)
            .await
            .expect("checkpoint")?;
        let staged = checkpoint["parts"].as_array().map_or(0, Vec::len);
        (staged >= parts).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_killed_zip_job_resumes_and_crashes_that_move_it_forward_do_not_bury_it() {
    use copiste::{
        jobs::bulk_render::staging_dir,
        render::zip::failpoints::{self, Action},
    };
    let mut c = config();
    c["downloads"]["max_part_bytes"] = json!(1);
    let app = TestApp::with(c).await;
    app.import_demo_with(session(), Scans::Shared).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    let job = app
        .enqueue(
            &default_zip(PHILO, &uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    // Four runs, each killed (as a process would be) right after staging
    // one more part than the run before: more crashes than the kind's
    // three attempts.
    for parts in 1..=4 {
        let armed = failpoints::after_parts(&staging_dir(job), parts, Action::Hang).expect("armed");
        let worker = app.worker().await;
        wait_parts(&app, job, parts).await;
        wait_reached(&armed).await;
        worker.kill();
        let row = app.job(job).await;
        assert_eq!(row.status.as_str(), "running", "killed while running");
    }
    let worker = app.worker().await;
    let row = app.wait_status(job, "succeeded", 60).await;
    assert_eq!(row.attempts, 5, "four crashed runs and the last");
    let result = row.result.expect("result");
    assert_eq!(result["resumed_parts"], 4, "{result}");
    let checkpoint = copiste::db::jobs::checkpoint(&app.db, job)
        .await
        .expect("checkpoint")
        .expect("recorded");
    let runs: Vec<u64> = checkpoint["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["run"].as_u64().expect("run"))
        .collect();
    assert_eq!(
        &runs[..4],
        [1, 2, 3, 4],
        "each run staged one part and resumed"
    );
    assert!(runs[4..].iter().all(|&r| r == 5), "{runs:?}");

    // The same zip built without interruption: the same bytes.
    let again = app
        .enqueue(
            &default_zip(PHILO, &uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let other = app.wait_status(again, "succeeded", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let digests = |r: &serde_json::Value| -> Vec<String> {
        r["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(|p| p["sha256"].as_str().expect("sha").to_owned())
            .collect()
    };
    let other = other.result.expect("result");
    assert_eq!(other["resumed_parts"], 0);
    assert_eq!(digests(&result), digests(&other));
    let parts: Vec<copiste::render::zip::Part> =
        serde_json::from_value(result["parts"].clone()).expect("parts");
    assert_eq!(part_digests(&app, &parts).await, digests(&other));
    // Nothing of the killed runs is at a final key but the recorded zip,
    // and housekeeping sweeps what they left staged once past the delay.
    let core = app.app();
    copiste::jobs::housekeeping::sweep_abandoned(&core, Duration::ZERO)
        .await
        .expect("sweep");
    let left = app.storage.list("downloads/").await.expect("list");
    let named: HashSet<String> = parts
        .iter()
        .map(|p| p.key.clone())
        .chain(
            serde_json::from_value::<Vec<copiste::render::zip::Part>>(other["parts"].clone())
                .expect("parts")
                .into_iter()
                .map(|p| p.key),
        )
        .collect();
    assert!(
        left.iter().all(|l| named.contains(&l.key)),
        "only recorded zips remain: {left:?}"
    );
}

#[tokio::test]
async fn a_zip_job_that_crashes_before_any_progress_uses_up_its_attempts() {
    use copiste::{
        jobs::bulk_render::staging_dir,
        render::zip::failpoints::{self, Action},
    };
    let app = app(true).await;
    close(&app, PHILO).await;
    let (_, uai) = numero_of(&app, "Martin").await;
    let job = app
        .enqueue(
            &default_zip(PHILO, &uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    for attempt in 1..=3 {
        // Fires as the run starts, before it stages anything.
        let armed = failpoints::after_parts(&staging_dir(job), 0, Action::Hang).expect("armed");
        let worker = app.worker().await;
        eventually(Duration::from_secs(30), || async {
            let row = app.job(job).await;
            (row.status.as_str() == "running" && row.attempts == attempt).then_some(())
        })
        .await;
        wait_reached(&armed).await;
        worker.kill();
    }
    let reconciler = app.worker().await;
    let row = app.wait_status(job, "dead", 30).await;
    reconciler
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stop");
    assert_eq!(row.attempts, 3);
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("attempt 3 of 3 crashed"), "{error}");
}

/// A session whose copies have `pages` pages (one shared scan): the zip
/// of one establishment is one part of several upload chunks.
async fn heavy_app(config: serde_json::Value, pages: u32) -> TestApp {
    let app = TestApp::with(config).await;
    let opts = DemoDataOptions {
        establishments: 3,
        candidates: 8,
        pages,
        seed: 2026,
    };
    app.import_demo_with(opts, Scans::Shared).await;
    app
}

/// The plan of a test zip in one part, however large.
fn one_part(name: &str) -> ZipPlan {
    ZipPlan {
        max_part_bytes: 1 << 40,
        ..small_parts(name)
    }
}

/// Every checkpoint a build records, in order.
type Saved = std::sync::Arc<std::sync::Mutex<Vec<copiste::render::zip::ZipProgress>>>;

fn recorder(
    saved: &Saved,
) -> impl Fn(
    &copiste::render::zip::ZipProgress,
) -> futures::future::BoxFuture<'static, anyhow::Result<()>>
+ Send
+ Sync {
    let saved = saved.clone();
    move |p| {
        saved.lock().expect("lock").push(p.clone());
        Box::pin(async { Ok(()) })
    }
}

/// The last checkpoint recorded.
fn last_saved(saved: &Saved) -> Option<copiste::render::zip::ZipProgress> {
    saved.lock().expect("lock").last().cloned()
}

/// Builds `name`'s zip of `rows` in one part, killed (its future dropped,
/// as a killed process stops) once `chunks` chunks of its upload are
/// recorded and the chunks then in flight are written; the progress it
/// recorded last.
async fn killed_after_chunks(
    app: &TestApp,
    rows: &[copiste::db::render::CopyRow],
    name: &str,
    chunks: usize,
    saved: &Saved,
) -> copiste::render::zip::ZipProgress {
    use copiste::render::zip::{
        Resume,
        failpoints::{self, Action},
        write_zip_resumable,
    };
    let plan = one_part(name);
    let armed = failpoints::after_chunks(&plan.staging_dir, chunks, Action::Hang).expect("armed");
    let save = recorder(saved);
    let build = write_zip_resumable(
        &app.storage,
        rows.to_vec(),
        &plan,
        &no_progress,
        Some(Resume {
            from: None,
            run: 1,
            save: &save,
        }),
    );
    tokio::select! {
        outcome = build => panic!("the build ended before its failpoint: {outcome:?}"),
        () = wait_reached(&armed) => {}
    }
    let progress = last_saved(saved).expect("recorded");
    assert_eq!(
        progress.upload.as_ref().map(|u| u.chunks.len()),
        Some(chunks),
        "the last checkpoint records the chunks the build stopped after"
    );
    progress
}

/// The objects at the keys of the zip whose keys start with `stem`.
async fn at_final_keys(app: &TestApp, stem: &str) -> Vec<String> {
    let folder = stem.rsplit_once('/').map_or(stem, |(folder, _)| folder);
    app.storage
        .list(folder)
        .await
        .expect("list")
        .into_iter()
        .filter(|l| l.key.starts_with(&format!("{stem}.zip")))
        .map(|l| l.key)
        .collect()
}

/// What every store must do: a build of one part killed after two
/// recorded chunks, continued by a second run that uploads only the
/// chunks after them into the same upload, gives the bytes of an
/// uninterrupted build, and nothing is at the zip's key before it is
/// complete. Then, when `gone_too`, the upload gone, a run starts the
/// part again with a new upload. Returns the id of the upload that was
/// continued.
async fn a_build_resumes_within_its_part(app: &TestApp, name: &str, gone_too: bool) -> String {
    use copiste::render::zip::{Resume, write_zip_resumable};
    let (_, uai) = numero_of(app, "Martin").await;
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, &uai)
        .await
        .expect("rows");
    // The reference: built without interruption.
    let reference = write_zip(
        &app.storage,
        rows.clone(),
        &one_part(&format!("{name}-ref")),
        &no_progress,
    )
    .await
    .expect("zip");
    assert_eq!(reference.parts.len(), 1);
    let total = reference.parts[0]
        .bytes
        .div_ceil(copiste::storage::UPLOAD_CHUNK_BYTES as u64);
    assert!(total >= 3, "{total} chunks: make the zip bigger");
    assert_eq!(reference.uploaded_chunks, total);
    let reference = part_digests(app, &reference.parts).await;

    // Run 1 is killed once 2 chunks are recorded: the upload is recorded
    // with them, and nothing is at the zip's key.
    let k = 2;
    let saved: Saved = Default::default();
    let after_1 = killed_after_chunks(app, &rows, name, k, &saved).await;
    let upload = after_1.upload.clone().expect("the upload is recorded");
    assert!(after_1.parts.is_empty());
    let first = saved.lock().expect("lock")[0].clone();
    assert!(
        first
            .upload
            .as_ref()
            .is_some_and(|u| u.chunks.is_empty() && u.upload_id == upload.upload_id),
        "the upload is recorded before its first chunk: {first:?}"
    );
    assert!(upload.chunks.iter().enumerate().all(|(i, c)| c.index == i
        && c.run == 1
        && c.bytes == copiste::storage::UPLOAD_CHUNK_BYTES as u64));
    let final_prefix = format!("downloads/test/{name}");
    assert!(at_final_keys(app, &final_prefix).await.is_empty());
    let staged = app
        .storage
        .list(&format!("downloads/.staging/{name}/"))
        .await
        .expect("list");
    assert!(
        staged.iter().all(|l| l.partial),
        "only an unfinished upload is staged: {staged:?}"
    );

    // Run 2 continues the same upload after the 2 chunks, uploads the
    // rest, and nothing shows at the zip's key until it is complete.
    saved.lock().expect("lock").clear();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watch = {
        let (storage, seen, prefix) = (app.storage.clone(), seen.clone(), final_prefix.clone());
        move |_, _| -> futures::future::BoxFuture<'static, ()> {
            let (storage, seen, prefix) = (storage.clone(), seen.clone(), prefix.clone());
            Box::pin(async move {
                let listed = storage.list("downloads/test").await.expect("list");
                seen.lock().expect("lock").extend(
                    listed
                        .into_iter()
                        .map(|l| l.key)
                        .filter(|k| k.starts_with(&format!("{prefix}.zip"))),
                );
            })
        }
    };
    let plan = one_part(name);
    let save = recorder(&saved);
    let outcome = write_zip_resumable(
        &app.storage,
        rows.clone(),
        &plan,
        &watch,
        Some(Resume {
            from: Some(after_1.clone()),
            run: 2,
            save: &save,
        }),
    )
    .await
    .expect("zip");
    assert_eq!(outcome.resumed_chunks, k as u64, "{outcome:?}");
    assert_eq!(outcome.uploaded_chunks, total - k as u64, "{outcome:?}");
    assert_eq!(outcome.restarted_uploads, 0);
    let recorded = saved.lock().expect("lock").clone();
    let uploads: Vec<_> = recorded.iter().filter_map(|p| p.upload.clone()).collect();
    assert!(!uploads.is_empty());
    assert!(
        uploads
            .iter()
            .all(|u| u.upload_id == upload.upload_id && u.run == 1),
        "run 2 continued run 1's upload"
    );
    let last_upload = uploads.last().expect("an upload");
    let runs: Vec<u32> = last_upload.chunks.iter().map(|c| c.run).collect();
    let mut expected_runs = vec![1; k];
    expected_runs.resize(total as usize, 2);
    assert_eq!(
        runs, expected_runs,
        "run 2 uploaded only the chunks after {k}"
    );
    let staged = last_saved(&saved).expect("recorded").parts;
    assert_eq!(staged.len(), 1);
    assert_eq!(
        (staged[0].chunks, staged[0].resumed_chunks, staged[0].run),
        (total as u32, k as u32, 2)
    );
    assert_eq!(
        part_digests(app, &outcome.parts).await,
        reference,
        "the resumed zip is the uninterrupted one, byte for byte"
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing at the zip's key before it was complete: {:?}",
        seen.lock().expect("lock")
    );
    assert_eq!(
        at_final_keys(app, &final_prefix).await,
        [outcome.parts[0].key.clone()]
    );

    if !gone_too {
        return upload.upload_id;
    }
    // The same record again: its upload is complete, gone from the
    // store. The run starts the part again with a new upload and the
    // same bytes.
    saved.lock().expect("lock").clear();
    let again = write_zip_resumable(
        &app.storage,
        rows.clone(),
        &plan,
        &no_progress,
        Some(Resume {
            from: Some(after_1),
            run: 3,
            save: &save,
        }),
    )
    .await
    .expect("zip");
    assert_eq!(again.restarted_uploads, 1, "{again:?}");
    assert_eq!(again.uploaded_chunks, total);
    let new_ids: HashSet<String> = saved
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|p| p.upload.as_ref().map(|u| u.upload_id.clone()))
        .collect();
    assert!(
        new_ids.len() == 1 && !new_ids.contains(&upload.upload_id),
        "{new_ids:?}"
    );
    assert_eq!(part_digests(app, &again.parts).await, reference);
    upload.upload_id
}

/// Records `upload` in the checkpoint of a `bulk-render` job in `status`;
/// the job's id.
async fn job_with_upload(
    app: &TestApp,
    uai: &str,
    status: &str,
    upload: &copiste::storage::ResumableUpload,
) -> uuid::Uuid {
    let job = app
        .enqueue(
            &default_zip(PHILO, uai),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let checkpoint = copiste::render::zip::ZipProgress {
        upload: Some(copiste::render::zip::PartUpload {
            part: 1,
            key: upload.key().to_owned(),
            upload_id: upload.upload_id().to_owned(),
            started_at: chrono::Utc::now(),
            run: 1,
            chunks: Vec::new(),
        }),
        ..Default::default()
    };
    sqlx::query("UPDATE jobs SET status = $2, checkpoint = $3 WHERE id = $1")
        .bind(job)
        .bind(status)
        .bind(serde_json::to_value(&checkpoint).expect("json"))
        .execute(&pool(app).await)
        .await
        .expect("record the upload");
    job
}

/// Housekeeping aborts the upload a dead job recorded and forgets it, and
/// leaves the one of a queued job; `in_store(key, upload id)` says
/// whether the store still has an upload.
async fn housekeeping_aborts_recorded_uploads<F, Fut>(app: &TestApp, in_store: F)
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (_, uai) = numero_of(app, "Martin").await;
    let mut uploads = Vec::new();
    let mut jobs = Vec::new();
    for status in ["dead", "queued"] {
        let upload = app
            .storage
            .start_resumable_upload(&format!("downloads/.staging/hk-{status}/X.zip"))
            .await
            .expect("upload");
        upload
            .put_chunk(
                0,
                vec![bytes::Bytes::from(vec![
                    7u8;
                    copiste::storage::UPLOAD_CHUNK_BYTES
                ])],
            )
            .await
            .expect("a chunk");
        jobs.push(job_with_upload(app, &uai, status, &upload).await);
        assert!(in_store(upload.key().to_owned(), upload.upload_id().to_owned()).await);
        uploads.push(upload);
    }
    let core = app.app();
    let aborted = copiste::jobs::housekeeping::abort_abandoned_uploads(&core)
        .await
        .expect("housekeeping");
    assert_eq!(aborted, 1);
    let (dead, queued) = (&uploads[0], &uploads[1]);
    assert!(
        !in_store(dead.key().to_owned(), dead.upload_id().to_owned()).await,
        "the dead job's upload is aborted"
    );
    assert!(
        in_store(queued.key().to_owned(), queued.upload_id().to_owned()).await,
        "the queued job's upload is left"
    );
    let checkpoint = |job| async move {
        copiste::db::jobs::checkpoint(&app.db, job)
            .await
            .expect("checkpoint")
            .expect("a checkpoint")
    };
    assert!(checkpoint(jobs[0]).await.get("upload").is_none());
    assert!(checkpoint(jobs[1]).await.get("upload").is_some());
    // Nothing to do the second time.
    assert_eq!(
        copiste::jobs::housekeeping::abort_abandoned_uploads(&core)
            .await
            .expect("housekeeping"),
        0
    );
    // Nothing of them was ever visible at a key.
    for upload in &uploads {
        assert_eq!(app.storage.size(upload.key()).await.expect("head"), None);
    }
}

#[tokio::test]
async fn on_the_local_store_a_zip_build_resumes_within_its_part() {
    let app = heavy_app(config(), 20).await;
    close(&app, PHILO).await;
    let upload_id = a_build_resumes_within_its_part(&app, "within-local", true).await;
    // The staging file of the continued upload became the part.
    let left: Vec<_> = walk(&app.dir.path().join("objects/downloads"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains('#'))
        .collect();
    assert!(left.is_empty(), "{upload_id}: {left:?}");

    // A recorded upload whose staging file is shorter than its chunks,
    // one whose chunk built again is not the bytes recorded, and one whose
    // staging file lost recorded bytes but not its length (chunks are not
    // synced one by one: a crash of the machine), are given up: their
    // part starts again with a new upload.
    let (_, uai) = numero_of(&app, "Martin").await;
    let rows = copiste::db::render::transmitted_copies(&app.db, PHILO, &uai)
        .await
        .expect("rows");
    for case in ["short-local", "other-local", "garbled-local"] {
        use copiste::render::zip::{Resume, write_zip_resumable};
        let saved: Saved = Default::default();
        let mut from = killed_after_chunks(&app, &rows, case, 2, &saved).await;
        let upload = from.upload.clone().expect("recorded");
        if case != "other-local" {
            let file = walk(
                &app.dir
                    .path()
                    .join(format!("objects/downloads/.staging/{case}")),
            )
            .into_iter()
            .find(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("#{}", upload.upload_id))
            })
            .expect("the staging file");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open");
            if case == "short-local" {
                f.set_len(1000).expect("cut");
            } else {
                use std::os::unix::fs::FileExt as _;
                f.write_all_at(&[0; 4096], 1 << 20).expect("garble");
            }
        } else if let Some(u) = from.upload.as_mut() {
            u.chunks[1].sha256 = "0".repeat(64);
        }
        let save = recorder(&saved);
        let outcome = write_zip_resumable(
            &app.storage,
            rows.clone(),
            &one_part(case),
            &no_progress,
            Some(Resume {
                from: Some(from),
                run: 2,
                save: &save,
            }),
        )
        .await
        .expect("zip");
        assert_eq!(outcome.restarted_uploads, 1, "{case}: {outcome:?}");
        assert_eq!(outcome.resumed_chunks, 0, "{case}");
        assert!(last_saved(&saved).expect("saved").upload.is_none());
        let left: Vec<_> = walk(&app.dir.path().join("objects/downloads"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains('#'))
            .collect();
        assert!(
            left.is_empty(),
            "{case}: the given-up upload is gone: {left:?}"
        );
    }

    housekeeping_aborts_recorded_uploads(&app, |key, id| {
        let file = app.dir.path().join("objects").join(format!("{key}#{id}"));
        async move { file.exists() }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs moto (S3): scripts/test runs it with --ignored"]
async fn on_s3_a_zip_build_resumes_within_its_part_and_housekeeping_aborts_abandoned_uploads() {
    let bucket = "copiste-within";
    let (moto, config) = on_moto(bucket).await;
    let client = copiste::tls::http_client().build().expect("an HTTP client");
    let app = heavy_app(config, 20).await;
    close(&app, PHILO).await;
    // The bucket's multipart uploads in progress, as S3 lists them.
    let uploads = || async {
        client
            .get(format!("{}/{bucket}?uploads", moto.endpoint))
            .send()
            .await
            .expect("list uploads")
            .text()
            .await
            .expect("body")
    };
    // moto answers a chunk sent to an upload it no longer has with a 500
    // (real S3: 404 NoSuchUpload, which the build takes for "gone"), so
    // the part started again is checked on the local store only.
    let upload_id = a_build_resumes_within_its_part(&app, "within-s3", false).await;
    let listed = uploads().await;
    assert!(
        !listed.contains(&upload_id),
        "the continued upload is complete: {listed}"
    );
    housekeeping_aborts_recorded_uploads(&app, |_key, id| {
        let uploads = uploads();
        async move {
            uploads
                .await
                .contains(&format!("<UploadId>{id}</UploadId>"))
        }
    })
    .await;
}
