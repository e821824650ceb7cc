//! `copiste import`: validation of session exports, content-addressed scan
//! upload and idempotent upserts of the catalogue.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use copiste::{
    config::Config,
    domain::Uai,
    import::{
        DEFAULT_MAX_SCAN_BYTES, ImportError, ImportOptions, ImportStep, ImportSummary, import_dir,
        import_dir_with,
    },
};
use image::{ExtendedColorType, ImageEncoder as _, codecs::jpeg::JpegEncoder};
use serde_json::{Value, json};
use sqlx::PgPool;
use tempfile::TempDir;

use crate::support::TestApp;

const PHILO: &str = "BAC26-PHILO";
const MATHS: &str = "BAC26-MATHS";

/// A tiny real grey JPEG; different shades give different files.
fn jpeg(shade: u8) -> Vec<u8> {
    jpeg_of(&[shade; 16 * 16])
}

fn jpeg_of(pixels: &[u8; 256]) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .write_image(pixels, 16, 16, ExtendedColorType::L8)
        .expect("encode jpeg");
    bytes
}

fn uai(n: u32) -> String {
    Uai::from_number(n).as_str().to_owned()
}

fn numero(i: usize) -> String {
    format!("20260000{i:04}")
}

/// An export directory being built: the manifest as JSON, and its scans.
struct Export {
    dir: TempDir,
    manifest: Value,
}

impl Export {
    /// A valid export: 2 academies, 3 establishments, 2 exams, 2 graders,
    /// 4 candidates and 6 copies (one absent, without pages) over 9 scan
    /// files, two of which have the same content.
    fn valid() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let export = Self {
            dir,
            manifest: json!({
                "format": 1,
                "session": {"code": "BAC2026", "name": "Baccalauréat 2026"},
                "academies": [
                    {"code": "A01", "name": "Paris"},
                    {"code": "A02", "name": "Lyon"}
                ],
                "establishments": [
                    {"uai": uai(751234), "name": "Lycée Henri-IV", "academy": "A01"},
                    {"uai": uai(691234), "name": "Lycée du Parc", "academy": "A02"},
                    {"uai": uai(9_991_234), "name": "Lycée français de Rabat", "academy": "A01", "abroad": true}
                ],
                "exams": [
                    {"code": PHILO, "subject": "Philosophie", "kind": "ponctuel"},
                    {"code": MATHS, "subject": "Mathématiques", "kind": "harmonised"}
                ],
                "graders": [
                    {"code": "G1", "nom": "Martin", "prenom": "Anne", "academy": "A01"},
                    {"code": "G2", "nom": "Bernard", "prenom": "Paul", "academy": "A02"}
                ],
                "candidates": [
                    {"numero": numero(1), "nom": "Durand", "prenom": "Hélène", "establishment": uai(751234)},
                    {"numero": numero(2), "nom": "Petit", "prenom": "Léo", "establishment": uai(751234)},
                    {"numero": numero(3), "nom": "Moreau", "prenom": "Inès", "establishment": uai(691234)},
                    {"numero": numero(4), "nom": "Benali", "prenom": "", "establishment": uai(9_991_234)}
                ],
                "copies": [
                    {"exam": PHILO, "candidate": numero(1), "grader": "G1", "grade": 14.5,
                     "grading_details": [{"question": "I", "mark": 8, "max": 10},
                                         {"question": "II", "mark": 6.5, "max": 10}],
                     "appreciation": "Bonne copie.",
                     "annotations": [{"page": 2, "x": 0.5, "y": 0.25, "kind": "comment", "text": "Précis"},
                                     {"page": 1, "x": 0.1, "y": 0.9, "kind": "mark"}],
                     "pages": ["scans/1-philo-1.jpg", "scans/1-philo-2.jpg"]},
                    {"exam": PHILO, "candidate": numero(2), "grader": "G1", "grade": 9.25,
                     "pages": ["scans/2-philo-1.jpg"]},
                    {"exam": PHILO, "candidate": numero(3), "grader": "G2", "grade": null,
                     "pages": ["scans/3-philo-1.jpg", "scans/3-philo-2.jpg"]},
                    {"exam": PHILO, "candidate": numero(4), "absent": true, "pages": []},
                    {"exam": MATHS, "candidate": numero(1), "grader": "G2", "grade": 17,
                     "pages": ["scans/1-maths-1.jpg", "scans/1-maths-2.jpg"]},
                    {"exam": MATHS, "candidate": numero(3), "grade": 0,
                     "pages": ["scans/3-maths-1.jpg", "scans/3-maths-copy.jpg"]}
                ]
            }),
        };
        let files = [
            ("scans/1-philo-1.jpg", 10),
            ("scans/1-philo-2.jpg", 20),
            ("scans/2-philo-1.jpg", 30),
            ("scans/3-philo-1.jpg", 40),
            ("scans/3-philo-2.jpg", 50),
            ("scans/1-maths-1.jpg", 60),
            ("scans/1-maths-2.jpg", 70),
            ("scans/3-maths-1.jpg", 80),
            // The same content as 1-philo-1.jpg: stored once.
            ("scans/3-maths-copy.jpg", 10),
        ];
        for (path, shade) in files {
            export.file(path, &jpeg(shade));
        }
        export
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of the export.
    fn file(&self, relative: &str, bytes: &[u8]) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write file");
    }

    /// Writes `manifest.json` as it is now.
    fn write(&self) {
        self.file(
            "manifest.json",
            &serde_json::to_vec_pretty(&self.manifest).expect("manifest json"),
        );
    }

    async fn import(&self, app: &TestApp) -> Result<ImportSummary, ImportError> {
        self.write();
        import_dir(&app.db, &app.storage, self.path(), &|_| {}).await
    }
}

/// Row counts of every catalogue table.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    sessions: i64,
    academies: i64,
    establishments: i64,
    exams: i64,
    graders: i64,
    candidates: i64,
    copies: i64,
}

/// For what the import stored that no `db` function reads (row counts of
/// every table, grades as stored, candidates, content hashes).
async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("connect")
}

async fn rows(app: &TestApp) -> Rows {
    let pool = pool(app).await;
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM sessions) AS "sessions!",
                  (SELECT count(*) FROM academies) AS "academies!",
                  (SELECT count(*) FROM establishments) AS "establishments!",
                  (SELECT count(*) FROM exams) AS "exams!",
                  (SELECT count(*) FROM graders) AS "graders!",
                  (SELECT count(*) FROM candidates) AS "candidates!",
                  (SELECT count(*) FROM copies) AS "copies!""#
    )
    .fetch_one(&pool)
    .await
    .expect("count rows");
    pool.close().await;
    Rows {
        sessions: row.sessions,
        academies: row.academies,
        establishments: row.establishments,
        exams: row.exams,
        graders: row.graders,
        candidates: row.candidates,
        copies: row.copies,
    }
}

const NO_ROWS: Rows = Rows {
    sessions: 0,
    academies: 0,
    establishments: 0,
    exams: 0,
    graders: 0,
    candidates: 0,
    copies: 0,
};

/// Each copy's (exam, numéro, version, grade as text), in a stable order.
async fn copy_versions(app: &TestApp) -> Vec<(String, String, i32, Option<String>)> {
    let pool = pool(app).await;
    let rows = sqlx::query!(
        r#"SELECT c.exam_code, k.numero, c.version, c.grade::text AS grade
           FROM copies c JOIN candidates k ON k.id = c.candidate_id
           ORDER BY c.exam_code, k.numero"#
    )
    .fetch_all(&pool)
    .await
    .expect("copies");
    pool.close().await;
    rows.into_iter()
        .map(|r| (r.exam_code, r.numero, r.version, r.grade))
        .collect()
}

/// Every file in the test's object store.
fn objects(app: &TestApp) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&app.dir.path().join("objects"), &mut found);
    found.sort();
    found
}

fn problems(result: Result<ImportSummary, ImportError>) -> Vec<String> {
    match result {
        Err(ImportError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected an invalid export, got {other:#?}"),
        Ok(summary) => panic!("expected an invalid export, got {summary:#?}"),
    }
}

/// An import ends by analysing the tables it wrote: until then the
/// planner guesses their sizes, and the nightly closure's look-up of one
/// establishment's ungraded copies read every copy of the exam (318 ms
/// instead of 7 ms per unit at a tenth of a national session, where
/// autovacuum had not analysed them). Only an explicit `ANALYZE` sets
/// `last_analyze` (autovacuum sets `last_autoanalyze`).
#[tokio::test]
async fn an_import_leaves_the_tables_it_wrote_analysed() {
    let app = TestApp::new().await;
    let export = Export::valid();
    export.write();
    import_dir(&app.db, &app.storage, export.path(), &|_| {})
        .await
        .expect("import");
    let analysed = app.analysed_tables("copies").await;
    for table in ["candidates", "copies", "establishments", "exams"] {
        assert!(
            analysed.iter().any(|t| t == table),
            "{table} not analysed after the import: {analysed:?}"
        );
    }
}

#[tokio::test]
async fn valid_export_is_imported() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let steps = std::cell::RefCell::new(Vec::new());
    export.write();
    let summary = import_dir(&app.db, &app.storage, export.path(), &|step| {
        steps.borrow_mut().push(step);
    })
    .await
    .expect("import");

    assert_eq!(summary.session, "BAC2026");
    assert_eq!(summary.academies.inserted, 2);
    assert_eq!(summary.establishments.inserted, 3);
    assert_eq!(summary.exams.inserted, 2);
    assert_eq!(summary.graders.inserted, 2);
    assert_eq!(summary.candidates.inserted, 4);
    assert_eq!(summary.copies.inserted, 6);
    assert_eq!(summary.copies.updated + summary.copies.unchanged, 0);
    assert_eq!(summary.scans_uploaded, 8, "9 files, two alike");
    assert_eq!(summary.scans_already_stored, 0);
    assert!(summary.bytes_uploaded > 0);
    assert_eq!(
        rows(&app).await,
        Rows {
            sessions: 1,
            academies: 2,
            establishments: 3,
            exams: 2,
            graders: 2,
            candidates: 4,
            copies: 6,
        }
    );
    let stored = objects(&app);
    assert_eq!(stored.len(), 8, "{stored:?}");

    let steps = steps.into_inner();
    assert_eq!(steps.first(), Some(&ImportStep::Manifest));
    assert_eq!(steps.last(), Some(&ImportStep::Done));
    assert!(steps.contains(&ImportStep::Checking { done: 9, total: 9 }));
    assert!(steps.contains(&ImportStep::Uploading { done: 8, total: 8 }));
    assert!(steps.contains(&ImportStep::Writing {
        done: 19,
        total: 19
    }));

    // The first copy, as stored.
    let pool = pool(&app).await;
    let copy = sqlx::query!(
        r#"SELECT c.grade::text AS "grade!", c.grader_code, c.absent, c.appreciation,
                  c.grading_details, c.annotations, c.page_keys, c.version, c.content_sha256,
                  k.nom, k.establishment_uai
           FROM copies c JOIN candidates k ON k.id = c.candidate_id
           WHERE c.exam_code = $1 AND k.numero = $2"#,
        PHILO,
        numero(1)
    )
    .fetch_one(&pool)
    .await
    .expect("copy");
    assert_eq!(copy.grade, "14.50");
    assert_eq!(copy.grader_code.as_deref(), Some("G1"));
    assert!(!copy.absent);
    assert_eq!(copy.appreciation.as_deref(), Some("Bonne copie."));
    assert_eq!(copy.grading_details[0]["question"], "I");
    assert_eq!(copy.grading_details[1]["mark"], 6.5);
    assert_eq!(copy.annotations[0]["kind"], "comment");
    assert_eq!(copy.annotations[1]["text"], "");
    assert_eq!(copy.version, 1);
    assert_eq!(copy.content_sha256.len(), 64);
    assert_eq!(copy.nom, "Durand");
    assert_eq!(copy.establishment_uai, uai(751234));
    assert_eq!(copy.page_keys.len(), 2);
    for key in &copy.page_keys {
        let bytes = app.storage.get(key).await.expect("stored scan");
        let sha = key
            .strip_prefix("scans/")
            .and_then(|k| k.get(3..67))
            .expect("key shape");
        assert_eq!(key, &format!("scans/{}/{sha}.jpg", &sha[..2]));
        use sha2::Digest as _;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha);
    }
    let absent = copiste::db::render::copy(&app.db, PHILO, &numero(4))
        .await
        .expect("read the copy")
        .expect("absent copy");
    assert!(absent.absent);
    assert_eq!(absent.grade, None);
    assert!(absent.page_keys.is_empty());
    let abroad = sqlx::query_scalar!(
        "SELECT abroad FROM establishments WHERE uai = $1",
        uai(9_991_234)
    )
    .fetch_one(&pool)
    .await
    .expect("abroad");
    assert!(abroad);
    pool.close().await;
}

#[tokio::test]
async fn every_problem_is_listed_and_nothing_is_written() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    let m = &mut export.manifest;
    // Structure.
    m["academies"][1]["name"] = json!("  ");
    m["academies"][1]["motto"] = json!("Fluctuat");
    m["establishments"][0]["uai"] = json!("0751234B");
    m["establishments"][1]["academy"] = json!("A99");
    m["exams"][1]["code"] = json!(PHILO);
    m["exams"][1]["kind"] = json!("oral");
    m["graders"][1]
        .as_object_mut()
        .expect("grader")
        .remove("nom");
    m["candidates"][2]["numero"] = json!(numero(2));
    m["candidates"][3]["establishment"] = json!(uai(123));
    // Copies.
    m["copies"][0]["grade"] = json!(21);
    m["copies"][0]["annotations"][0]["page"] = json!(3);
    m["copies"][0]["annotations"][1]["x"] = json!(1.5);
    m["copies"][0]["grading_details"][1]["mark"] = json!(12);
    m["copies"][1]["grade"] = json!(9.255);
    m["copies"][1]["candidate"] = json!("202600000042");
    m["copies"][2]["grader"] = json!("G9");
    m["copies"][3]["grade"] = json!(5);
    m["copies"][4]["pages"] = json!(["../outside.jpg", "/etc/passwd", "scans/1-maths-2.jpg"]);
    m["copies"][5]["exam"] = json!(PHILO);
    m["copies"][5]["candidate"] = json!(numero(1));
    m["copies"][5]["absent"] = json!("no");
    // Scans.
    export.file("scans/2-philo-1.jpg", b"GIF89a not a jpeg");
    std::fs::remove_file(export.path().join("scans/3-philo-2.jpg")).expect("remove");

    let result = export.import(&app).await;
    let message = match &result {
        Err(error) => error.to_string(),
        Ok(_) => String::new(),
    };
    let problems = problems(result);
    let expected = [
        "$.academies[1].name: must not be empty",
        "$.academies[1].motto: unknown field",
        &format!(
            "$.establishments[0].uai: the check letter of 0751234B should be {}",
            &uai(751234)[7..]
        ),
        "$.establishments[1].academy: unknown academy A99",
        "$.exams[1].kind: unknown variant `oral`, expected one of `ponctuel`, `harmonised`, `e3c`",
        "$.exams[1].code: duplicate exam code BAC26-PHILO, first at $.exams[0]",
        "$.graders[1].nom: required field is missing",
        "$.candidates[2].numero: duplicate candidate numero 202600000002, first at $.candidates[1]",
        &format!(
            "$.candidates[3].establishment: unknown establishment {}",
            uai(123)
        ),
        "$.copies[0].grading_details[1].mark: mark 12 is not between 0 and 10",
        "$.copies[0].annotations[1].x: x 1.5 is not between 0 and 1",
        "$.copies[0].grade: grade 21 is not between 0 and 20",
        "$.copies[0].annotations[0].page: page 3 is outside the copy's 2 page(s), numbered from 1",
        "$.copies[1].candidate: unknown candidate 202600000042",
        "$.copies[1].grade: grade 9.255 has more than 2 decimals",
        "$.copies[2].grader: unknown grader G9",
        "$.copies[3].grade: a copy marked absent cannot have a grade",
        "$.copies[4].pages[0]: ../outside.jpg leaves the export directory (`..` is not allowed)",
        "$.copies[4].pages[1]: /etc/passwd is an absolute path; paths are relative to the manifest's directory",
        "$.copies[5].absent: invalid type: string \"no\", expected a boolean",
        &format!(
            "$.candidates[0].establishment: unknown establishment {}",
            uai(751234)
        ),
        &format!(
            "$.candidates[1].establishment: unknown establishment {}",
            uai(751234)
        ),
        "$.copies[2].candidate: unknown candidate 202600000003",
        "$.copies[4].exam: unknown exam BAC26-MATHS",
        "$.copies[5]: a second copy of exam BAC26-PHILO for candidate 202600000001, first at $.copies[0]",
        "$.copies[1].pages[0]: scans/2-philo-1.jpg is not a JPEG file",
        "$.copies[2].pages[1]: scans/3-philo-2.jpg does not exist",
    ];
    for line in expected {
        assert!(
            problems.iter().any(|p| p == line),
            "missing problem {line:?} in\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(problems.len(), expected.len(), "{}", problems.join("\n"));
    // The error's message lists every problem, one per line.
    assert_eq!(
        message.lines().count(),
        expected.len() + 1,
        "header and one line per problem:\n{message}"
    );
    for line in expected {
        assert!(
            message.lines().any(|l| l == line),
            "{line} not in {message}"
        );
    }

    assert_eq!(rows(&app).await, NO_ROWS);
    assert!(objects(&app).is_empty(), "{:?}", objects(&app));
}

#[tokio::test]
async fn bad_uai_is_reported_with_its_check_letter() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.manifest["establishments"][2]["uai"] = json!("0751234B");
    export.manifest["candidates"][0]["establishment"] = json!("12345");
    export.manifest["candidates"][1]["establishment"] = json!("075123XA");
    let problems = problems(export.import(&app).await);
    assert_eq!(
        problems,
        [
            &format!(
                "$.establishments[2].uai: the check letter of 0751234B should be {}",
                &uai(751234)[7..]
            ),
            "$.candidates[0].establishment: a UAI is 8 characters (7 digits and a check letter), got 5",
            "$.candidates[1].establishment: a UAI starts with 7 digits",
            // Candidate 4's establishment was the one with the bad UAI.
            &format!(
                "$.candidates[3].establishment: unknown establishment {}",
                uai(9_991_234)
            ),
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[tokio::test]
async fn lower_case_uai_is_accepted_and_normalised() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    let lower = uai(751234).to_ascii_lowercase();
    export.manifest["establishments"][0]["uai"] = json!(lower);
    export.manifest["candidates"][0]["establishment"] = json!(format!(" {lower} "));
    export.import(&app).await.expect("import");
    let pool = pool(&app).await;
    let count = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM candidates WHERE establishment_uai = $1"#,
        uai(751234)
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(count, 2);
    pool.close().await;
}

#[tokio::test]
async fn duplicate_candidate_is_reported() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.manifest["candidates"][3]["numero"] = json!(numero(1));
    let problems = problems(export.import(&app).await);
    assert_eq!(
        problems,
        [
            "$.candidates[3].numero: duplicate candidate numero 202600000001, first at $.candidates[0]",
            // Copy 3 now names a candidate that does not exist.
            "$.copies[3].candidate: unknown candidate 202600000004",
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[tokio::test]
async fn missing_and_non_jpeg_scans_are_reported() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    // A PNG signature, a JPEG signature on garbage, a directory, nothing.
    export.file("scans/1-philo-2.jpg", b"\x89PNG\r\n\x1a\n0000");
    export.file("scans/1-maths-1.jpg", b"\xFF\xD8\xFF\xE0 truncated");
    export.file("scans/dir/x", b"");
    std::fs::remove_file(export.path().join("scans/3-maths-1.jpg")).expect("remove");
    export.manifest["copies"][1]["pages"] = json!(["scans/dir"]);
    // The same bad file named by two copies is reported at both.
    export.manifest["copies"][2]["pages"] = json!(["scans/3-philo-1.jpg", "scans/1-philo-2.jpg"]);
    let problems = problems(export.import(&app).await);
    assert_eq!(problems.len(), 5, "{}", problems.join("\n"));
    assert_eq!(
        problems[0],
        "$.copies[0].pages[1]: scans/1-philo-2.jpg is not a JPEG file"
    );
    assert_eq!(
        problems[1],
        "$.copies[1].pages[0]: scans/dir is not a regular file (a directory); scans must be regular files"
    );
    assert_eq!(
        problems[2],
        "$.copies[2].pages[1]: scans/1-philo-2.jpg is not a JPEG file"
    );
    assert!(
        problems[3].starts_with("$.copies[4].pages[0]: scans/1-maths-1.jpg is not a JPEG file ("),
        "{}",
        problems[3]
    );
    assert_eq!(
        problems[4],
        "$.copies[5].pages[0]: scans/3-maths-1.jpg does not exist"
    );
    assert_eq!(rows(&app).await, NO_ROWS);
    assert!(objects(&app).is_empty());
}

#[tokio::test]
async fn unreadable_manifests_are_reported() {
    let app = TestApp::new().await;
    let export = Export::valid();
    // No manifest at all: an I/O error, not a problem list.
    let result = import_dir(&app.db, &app.storage, export.path(), &|_| {}).await;
    assert!(matches!(result, Err(ImportError::Read(_))), "{result:?}");

    export.file("manifest.json", b"{\"format\": 1,");
    let result = import_dir(&app.db, &app.storage, export.path(), &|_| {}).await;
    let listed = problems(result);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].starts_with("$: not valid JSON: "), "{listed:?}");

    export.file("manifest.json", br#"{"format": 2, "copies": 3}"#);
    let result = import_dir(&app.db, &app.storage, export.path(), &|_| {}).await;
    assert_eq!(
        problems(result),
        ["$.format: format 2 is not supported (this build reads format 1)"]
    );

    export.file(
        "manifest.json",
        br#"{"format": 1, "session": [], "copies": {}}"#,
    );
    let result = import_dir(&app.db, &app.storage, export.path(), &|_| {}).await;
    assert_eq!(
        problems(result),
        [
            "$.session: expected an object, found an array",
            "$.academies: required field is missing",
            "$.establishments: required field is missing",
            "$.exams: required field is missing",
            "$.graders: required field is missing",
            "$.candidates: required field is missing",
            "$.copies: expected an array, found an object",
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[tokio::test]
async fn reimport_is_a_no_op() {
    let app = TestApp::new().await;
    let export = Export::valid();
    export.import(&app).await.expect("first import");
    let objects_before = objects(&app);
    let versions_before = copy_versions(&app).await;

    let summary = export.import(&app).await.expect("second import");
    for (table, counts) in summary.tables() {
        assert_eq!(counts.inserted + counts.updated, 0, "{table}: {counts}");
    }
    assert_eq!(summary.copies.unchanged, 6);
    assert_eq!(summary.candidates.unchanged, 4);
    assert_eq!(summary.scans_uploaded, 0);
    assert_eq!(summary.scans_already_stored, 8);
    assert_eq!(summary.bytes_uploaded, 0);
    assert_eq!(objects(&app), objects_before);
    let versions = copy_versions(&app).await;
    assert_eq!(versions, versions_before);
    assert!(versions.iter().all(|(_, _, version, _)| *version == 1));
}

#[tokio::test]
async fn changed_grade_bumps_only_that_copy() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.import(&app).await.expect("first import");

    export.manifest["copies"][1]["grade"] = json!(11);
    // The same grade written differently is no change.
    export.manifest["copies"][4]["grade"] = json!(17.0);
    // A renamed scan file with the same content is no change either.
    export.file("scans/renamed.jpg", &jpeg(30));
    export.manifest["copies"][1]["pages"] = json!(["scans/renamed.jpg"]);
    let summary = export.import(&app).await.expect("second import");
    assert_eq!(summary.copies.inserted, 0);
    assert_eq!(summary.copies.updated, 1);
    assert_eq!(summary.copies.unchanged, 5);
    assert_eq!(summary.scans_uploaded, 0);

    let versions = copy_versions(&app).await;
    for (exam, numero_, version, grade) in &versions {
        if exam == PHILO && *numero_ == numero(2) {
            assert_eq!(*version, 2);
            assert_eq!(grade.as_deref(), Some("11.00"));
        } else {
            assert_eq!(*version, 1, "{exam} {numero_}");
        }
    }

    // Each kind of content change bumps the version again.
    let changes = [
        (
            "grading_details",
            json!([{"question": "I", "mark": 11, "max": 20}]),
        ),
        ("appreciation", json!("Revue.")),
        (
            "annotations",
            json!([{"page": 1, "x": 0.2, "y": 0.2, "kind": "mark"}]),
        ),
        ("grader", json!("G2")),
        (
            "pages",
            json!(["scans/2-philo-1.jpg", "scans/3-maths-1.jpg"]),
        ),
    ];
    for (round, (field, value)) in changes.into_iter().enumerate() {
        export.manifest["copies"][1][field] = value;
        let summary = export.import(&app).await.expect("import");
        assert_eq!(summary.copies.updated, 1, "{field}");
        let version = copy_versions(&app)
            .await
            .into_iter()
            .find(|(exam, n, _, _)| exam == PHILO && *n == numero(2))
            .map(|(_, _, version, _)| version);
        assert_eq!(version, Some(3 + round as i32), "{field}");
    }
    // Absent (with the grade removed) is a change too.
    export.manifest["copies"][1]["absent"] = json!(true);
    export.manifest["copies"][1]["grade"] = Value::Null;
    let summary = export.import(&app).await.expect("import");
    assert_eq!(summary.copies.updated, 1);
    assert_eq!(summary.copies.unchanged, 5);
}

#[tokio::test]
async fn changed_candidate_is_updated() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.import(&app).await.expect("first import");
    export.manifest["candidates"][1]["nom"] = json!("Petit-Dupont");
    export.manifest["candidates"][2]["establishment"] = json!(uai(751234));
    export.manifest["establishments"][1]["name"] = json!("Lycée du Parc (Lyon)");
    let summary = export.import(&app).await.expect("second import");
    assert_eq!(summary.candidates.updated, 2);
    assert_eq!(summary.candidates.unchanged, 2);
    assert_eq!(summary.establishments.updated, 1);
    assert_eq!(summary.copies.unchanged, 6);

    let pool = pool(&app).await;
    let rows =
        sqlx::query!("SELECT numero, nom, establishment_uai FROM candidates ORDER BY numero")
            .fetch_all(&pool)
            .await
            .expect("candidates");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].nom, "Petit-Dupont");
    assert_eq!(rows[2].establishment_uai, uai(751234));
    pool.close().await;
}

#[tokio::test]
async fn exam_of_another_session_is_refused() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.import(&app).await.expect("first import");
    let objects_before = objects(&app);

    export.manifest["session"] = json!({"code": "BAC2027", "name": "Baccalauréat 2027"});
    export.file("scans/new.jpg", &jpeg(99));
    export.manifest["copies"][0]["pages"] = json!(["scans/new.jpg"]);
    export.manifest["copies"][0]["annotations"] = json!([]);
    let problems = problems(export.import(&app).await);
    assert_eq!(
        problems,
        [
            "$.exams[0].code: exam BAC26-PHILO already belongs to session BAC2026, not BAC2027",
            "$.exams[1].code: exam BAC26-MATHS already belongs to session BAC2026, not BAC2027",
        ]
    );
    assert_eq!(rows(&app).await.sessions, 1);
    assert_eq!(objects(&app), objects_before, "nothing uploaded");
}

/// A 256×256 grey JPEG of noise: a few tens of KB, so that its first KB
/// holds the headers and part of the image data.
fn noisy_jpeg() -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let pixels: Vec<u8> = (0..256 * 256)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .write_image(&pixels, 256, 256, ExtendedColorType::L8)
        .expect("encode jpeg");
    bytes
}

#[tokio::test]
async fn truncated_scans_are_refused_naming_the_file() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let whole = noisy_jpeg();
    assert!(whole.len() > 8 * 1024, "{} bytes", whole.len());
    let half = &whole[..whole.len() / 2];
    export.file("scans/1-philo-1.jpg", half);
    export.file("scans/1-philo-2.jpg", &whole[..1024]);
    // Half a file given an end marker: only decoding finds it.
    export.file("scans/2-philo-1.jpg", &[half, &[0xFF, 0xD9][..]].concat());
    // A whole file followed by padding zeros is fine.
    export.file("scans/3-philo-1.jpg", &[&whole[..], &[0; 100][..]].concat());
    let problems = problems(export.import(&app).await);
    assert_eq!(problems.len(), 3, "{}", problems.join("\n"));
    assert_eq!(
        problems[0],
        "$.copies[0].pages[0]: scans/1-philo-1.jpg is truncated: it does not end with the JPEG end-of-image marker"
    );
    assert_eq!(
        problems[1],
        "$.copies[0].pages[1]: scans/1-philo-2.jpg is truncated: it does not end with the JPEG end-of-image marker"
    );
    assert!(
        problems[2].starts_with(
            "$.copies[1].pages[0]: scans/2-philo-1.jpg is truncated or corrupt: its image data does not decode ("
        ),
        "{}",
        problems[2]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
    assert!(objects(&app).is_empty());

    // The whole file imports.
    export.file("scans/1-philo-1.jpg", &whole);
    export.file("scans/1-philo-2.jpg", &jpeg(20));
    export.file("scans/2-philo-1.jpg", &jpeg(30));
    export.import(&app).await.expect("import");
}

/// Imports `export` with `options`; `None` if it has not ended within a
/// minute (a deadline for a hang, far above the second it takes).
async fn import_quickly(
    app: &TestApp,
    export: &Export,
    options: &ImportOptions,
) -> Option<Result<ImportSummary, ImportError>> {
    export.write();
    let import = import_dir_with(&app.db, &app.storage, export.path(), options, &|_| {});
    tokio::time::timeout(std::time::Duration::from_secs(60), import)
        .await
        .ok()
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_to_devices_are_refused_quickly() {
    let app = TestApp::new().await;
    let export = Export::valid();
    for (scan, device) in [
        ("scans/1-philo-1.jpg", "/dev/zero"),
        ("scans/1-philo-2.jpg", "/dev/urandom"),
    ] {
        let path = export.path().join(scan);
        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink(device, &path).expect("symlink");
    }
    // A link to a regular file is followed.
    let target = export.path().join("elsewhere.jpg");
    std::fs::write(&target, jpeg(33)).expect("write");
    let path = export.path().join("scans/2-philo-1.jpg");
    std::fs::remove_file(&path).expect("remove");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");

    let result = import_quickly(&app, &export, &ImportOptions::default())
        .await
        .expect("the import ended: the devices were not read");
    assert_eq!(
        problems(result),
        [
            "$.copies[0].pages[0]: scans/1-philo-1.jpg is not a regular file (a symbolic link to a character device); scans must be regular files",
            "$.copies[0].pages[1]: scans/1-philo-2.jpg is not a regular file (a symbolic link to a character device); scans must be regular files",
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_scan_is_refused_without_hanging() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let fifo = export.path().join("scans/2-philo-1.jpg");
    std::fs::remove_file(&fifo).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let result = import_quickly(&app, &export, &ImportOptions::default()).await;
    let Some(result) = result else {
        // Release the reader stuck in open(2) so that the runtime can stop.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        panic!("the import hung on a FIFO");
    };
    assert_eq!(
        problems(result),
        [
            "$.copies[1].pages[0]: scans/2-philo-1.jpg is not a regular file (a FIFO); scans must be regular files"
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[tokio::test]
async fn a_scan_larger_than_the_limit_is_refused() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let big = noisy_jpeg();
    export.file("scans/3-philo-1.jpg", &big);
    let options = ImportOptions {
        max_scan_bytes: 4096,
        ..ImportOptions::default()
    };
    let result = import_quickly(&app, &export, &options)
        .await
        .expect("the import ended within its deadline");
    assert_eq!(
        problems(result),
        [format!(
            "$.copies[2].pages[0]: scans/3-philo-1.jpg is larger than the limit of 4096 bytes (import.max_scan_bytes): it has {} bytes",
            big.len()
        )]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
    // Within the limit, it imports.
    let options = ImportOptions {
        max_scan_bytes: big.len() as u64,
        ..ImportOptions::default()
    };
    import_quickly(&app, &export, &options)
        .await
        .expect("the import ended within its deadline")
        .expect("import");
}

#[test]
fn the_scan_size_limit_is_configured_and_checked() {
    let config = Config::load_with_overrides(json!({})).expect("defaults load");
    assert_eq!(config.import.max_scan_bytes, DEFAULT_MAX_SCAN_BYTES);
    assert_eq!(
        ImportOptions::from_config(&config.import),
        ImportOptions::default()
    );
    let config =
        Config::load_with_overrides(json!({"import": {"max_scan_bytes": 1000}})).expect("loads");
    assert_eq!(
        ImportOptions::from_config(&config.import).max_scan_bytes,
        1000
    );
    let error = Config::load_with_overrides(json!({"import": {"max_scan_bytes": 0}}))
        .expect_err("a zero limit is refused")
        .to_string();
    assert!(error.contains("import.max_scan_bytes"), "{error}");
}

#[tokio::test]
async fn control_characters_are_refused_with_their_path() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    let m = &mut export.manifest;
    m["session"]["name"] = json!("Bac\u{7}2026");
    m["academies"][0]["name"] = json!("Par\u{0}is");
    m["exams"][0]["subject"] = json!("Philo\u{1b}[31m");
    m["graders"][1]["prenom"] = json!("Pa\u{85}ul");
    m["candidates"][1]["nom"] = json!("Petit\u{0}");
    m["candidates"][2]["prenom"] = json!("In\u{0}ès");
    m["copies"][0]["appreciation"] = json!("Bonne copie.\n\tMais\u{0}");
    m["copies"][0]["grading_details"][0]["question"] = json!("I\n");
    m["copies"][0]["annotations"][0]["text"] = json!("Précis\r");
    m["copies"][1]["grader"] = json!("G1\u{0}");
    m["copies"][2]["pages"][0] = json!("scans/3-philo-1.jpg\u{0}");
    let problems = problems(export.import(&app).await);
    assert_eq!(
        problems,
        [
            "$.session.name: must not contain control characters (found U+0007 at character 4)",
            "$.academies[0].name: must not contain control characters (found U+0000 at character 4)",
            "$.exams[0].subject: must not contain control characters (found U+001B at character 6)",
            "$.graders[1].prenom: must not contain control characters (found U+0085 at character 3)",
            "$.candidates[1].nom: must not contain control characters (found U+0000 at character 6)",
            "$.candidates[2].prenom: must not contain control characters (found U+0000 at character 3)",
            "$.copies[0].grading_details[0].question: must not contain control characters (found U+000A at character 2)",
            "$.copies[0].appreciation: must not contain control characters other than newline and tab (found U+0000 at character 19)",
            "$.copies[0].annotations[0].text: must not contain control characters other than newline and tab (found U+000D at character 7)",
            "$.copies[1].grader: must not contain control characters (found U+0000 at character 3)",
            "$.copies[2].pages[0]: \"scans/3-philo-1.jpg\\0\" must not contain control characters (found U+0000 at character 20)",
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

#[tokio::test]
async fn free_text_keeps_newlines_and_tabs() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    export.manifest["copies"][0]["appreciation"] = json!("Bonne copie.\n\tSuite.");
    export.manifest["copies"][0]["annotations"][0]["text"] = json!("Précis,\nmais court");
    export.import(&app).await.expect("import");
    let copy = copiste::db::render::copy(&app.db, PHILO, &numero(1))
        .await
        .expect("read the copy")
        .expect("the copy");
    assert_eq!(copy.appreciation.as_deref(), Some("Bonne copie.\n\tSuite."));
}

#[tokio::test]
async fn codes_are_restricted_to_safe_characters() {
    let app = TestApp::new().await;
    let mut export = Export::valid();
    let evil = "EVIL/../x \"q\"";
    let m = &mut export.manifest;
    m["session"]["code"] = json!("BAC 2026");
    m["academies"][1]["code"] = json!("A02:lyon");
    m["establishments"][1]["academy"] = json!("A02:lyon");
    m["graders"][1]["academy"] = json!("A02:lyon");
    m["exams"][1]["code"] = json!(evil);
    m["copies"][4]["exam"] = json!(evil);
    m["copies"][5]["exam"] = json!(evil);
    m["graders"][0]["code"] = json!("G".repeat(33));
    for copy in [0, 1] {
        m["copies"][copy]["grader"] = json!("G".repeat(33));
    }
    m["candidates"][3]["numero"] = json!(".hidden");
    m["copies"][3]["candidate"] = json!(".hidden");
    m["candidates"][2]["numero"] = json!("Numéro3");
    m["copies"][2]["candidate"] = json!("Numéro3");
    m["copies"][5]["candidate"] = json!("Numéro3");
    let problems = problems(export.import(&app).await);
    let rule = "use 1 to 32 ASCII letters, digits, '-', '_' or '.', not starting with '.'";
    assert_eq!(
        problems,
        [
            format!("$.session.code: session code \"BAC 2026\" has the character ' ': {rule}"),
            format!("$.academies[1].code: academy code \"A02:lyon\" has the character ':': {rule}"),
            format!(
                "$.exams[1].code: exam code \"EVIL/../x \\\"q\\\"\" has the character '/': {rule}"
            ),
            format!(
                "$.graders[0].code: grader code \"{}\" is 33 characters long: {rule}",
                "G".repeat(33)
            ),
            format!(
                "$.candidates[2].numero: candidate numero \"Numéro3\" has the character 'é': {rule}"
            ),
            format!(
                "$.candidates[3].numero: candidate numero \".hidden\" is not a valid code: {rule}"
            ),
        ]
    );
    assert_eq!(rows(&app).await, NO_ROWS);
}

/// A session of `COPISTE_IMPORT_BENCH_COPIES` copies (default 100 000),
/// 2 pages each, over tiny distinct scans: times the first import and a
/// re-import. Run with
/// `cargo test --release --test integration import_bench -- --ignored --nocapture`
/// (by hand: a benchmark, not a check).
#[tokio::test]
#[ignore = "benchmark run by hand (see its comment); writes hundreds of thousands of files"]
async fn import_bench() {
    let copies: usize = std::env::var("COPISTE_IMPORT_BENCH_COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exams = 10;
    let candidates = copies.div_ceil(exams);
    let establishments = candidates.div_ceil(150).max(1);

    let started = Instant::now();
    let mut manifest = json!({
        "format": 1,
        "session": {"code": "BENCH", "name": "Bench"},
        "academies": [{"code": "A01", "name": "Paris"}],
        "establishments": (0..establishments)
            .map(|e| json!({"uai": uai(100_000 + e as u32), "name": format!("Lycée {e}"), "academy": "A01"}))
            .collect::<Vec<_>>(),
        "exams": (0..exams)
            .map(|x| json!({"code": format!("BENCH-{x}"), "subject": format!("Subject {x}"), "kind": "ponctuel"}))
            .collect::<Vec<_>>(),
        "graders": [{"code": "G1", "nom": "Martin", "prenom": "Anne", "academy": "A01"}],
        "candidates": (0..candidates)
            .map(|c| json!({"numero": format!("N{c:08}"), "nom": format!("Nom{c}"), "prenom": "Prénom",
                            "establishment": uai(100_000 + (c / 150) as u32)}))
            .collect::<Vec<_>>(),
        "copies": []
    });
    std::fs::create_dir_all(dir.path().join("scans")).expect("mkdir");
    let mut list = Vec::with_capacity(copies);
    for i in 0..copies {
        let mut pages = Vec::new();
        for p in 0..2 {
            let n = i * 2 + p;
            // One black or white pixel per bit of n: distinct after
            // compression.
            let mut pixels = [128u8; 256];
            for (bit, pixel) in pixels.iter_mut().step_by(5).take(24).enumerate() {
                *pixel = if n >> bit & 1 == 1 { 255 } else { 0 };
            }
            let path = format!("scans/{n:07}.jpg");
            std::fs::write(dir.path().join(&path), jpeg_of(&pixels)).expect("scan");
            pages.push(path);
        }
        list.push(json!({
            "exam": format!("BENCH-{}", i % exams), "candidate": format!("N{:08}", i / exams),
            "grader": "G1", "grade": (i % 2001) as f64 / 100.0,
            "grading_details": [{"question": "1", "mark": 1, "max": 2}],
            "annotations": [{"page": 1, "x": 0.5, "y": 0.5, "kind": "comment", "text": "ok"}],
            "pages": pages
        }));
    }
    manifest["copies"] = Value::Array(list);
    std::fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("manifest");
    drop(manifest);
    eprintln!("generated {copies} copies in {:?}", started.elapsed());

    let summary = timed_import(&app, dir.path(), "first import").await;
    assert_eq!(summary.copies.inserted, copies as u64);
    let summary = timed_import(&app, dir.path(), "re-import").await;
    assert_eq!(summary.copies.unchanged, copies as u64);
}

/// Imports `dir`, printing the time spent in each step.
async fn timed_import(app: &TestApp, dir: &Path, label: &str) -> ImportSummary {
    let started = Instant::now();
    let phases = std::cell::RefCell::new(Vec::<(&'static str, Instant)>::new());
    let summary = import_dir(&app.db, &app.storage, dir, &|step| {
        let name = match step {
            ImportStep::Manifest => "manifest",
            ImportStep::Checking { .. } => "checking scans",
            ImportStep::Uploading { .. } => "uploading scans",
            ImportStep::Writing { .. } => "writing rows",
            ImportStep::Pieces { .. } => "pieces",
            ImportStep::Done => "done",
        };
        let mut phases = phases.borrow_mut();
        if phases.last().is_none_or(|(last, _)| *last != name) {
            phases.push((name, Instant::now()));
        }
    })
    .await
    .expect("import");
    eprintln!("{label} in {:?}:", started.elapsed());
    for pair in phases.borrow().windows(2) {
        eprintln!("  {:<16} {:?}", pair[0].0, pair[1].1 - pair[0].1);
    }
    eprintln!("{summary}");
    summary
}

/// A format-2 (pieced) export: `session.json`, `pieces/*.json` and scans.
struct Pieced {
    dir: TempDir,
}

impl Pieced {
    /// The format-1 `export` split into `session.json` and one piece per
    /// establishment (`pieces/<uai>.json`, with its candidates and their
    /// copies), with a copy of its scans.
    fn from(export: &Export) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pieced = Self { dir };
        for file in crate::support::walk(&export.path().join("scans")) {
            let relative = file.strip_prefix(export.path()).expect("inside");
            pieced.file(
                relative.to_str().expect("UTF-8"),
                &std::fs::read(&file).expect("scan"),
            );
        }
        let m = &export.manifest;
        let session = json!({
            "format": 2,
            "session": m["session"],
            "academies": m["academies"],
            "establishments": m["establishments"],
            "exams": m["exams"],
            "graders": m["graders"],
        });
        pieced.file(
            "session.json",
            &serde_json::to_vec_pretty(&session).expect("json"),
        );
        for establishment in m["establishments"].as_array().expect("establishments") {
            let uai = establishment["uai"].as_str().expect("uai");
            let candidates: Vec<Value> = m["candidates"]
                .as_array()
                .expect("candidates")
                .iter()
                .filter(|c| c["establishment"] == uai)
                .cloned()
                .collect();
            let copies: Vec<Value> = m["copies"]
                .as_array()
                .expect("copies")
                .iter()
                .filter(|copy| candidates.iter().any(|c| c["numero"] == copy["candidate"]))
                .cloned()
                .collect();
            pieced.write_piece(
                uai,
                &json!({"format": 2, "candidates": candidates, "copies": copies}),
            );
        }
        pieced
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, relative: &str, bytes: &[u8]) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write file");
    }

    /// The piece of establishment `uai`.
    fn piece(&self, uai: &str) -> Value {
        let bytes = std::fs::read(self.path().join(format!("pieces/{uai}.json"))).expect("piece");
        serde_json::from_slice(&bytes).expect("piece json")
    }

    fn write_piece(&self, uai: &str, piece: &Value) {
        self.file(
            &format!("pieces/{uai}.json"),
            &serde_json::to_vec_pretty(piece).expect("json"),
        );
    }

    async fn import(&self, app: &TestApp) -> Result<ImportSummary, ImportError> {
        import_dir(&app.db, &app.storage, self.path(), &|_| {}).await
    }
}

/// Every copy as stored, with its candidate, in a stable order: what two
/// imports of the same session must agree on.
async fn copy_dump(app: &TestApp) -> Vec<String> {
    let pool = pool(app).await;
    let rows = sqlx::query!(
        r#"SELECT c.exam_code, k.numero, k.nom, k.prenom, k.establishment_uai, c.version,
                  c.grade::text AS grade, c.grader_code, c.absent, c.appreciation,
                  c.grading_details, c.annotations, c.page_keys, c.content_sha256
           FROM copies c JOIN candidates k ON k.id = c.candidate_id
           ORDER BY c.exam_code, k.numero"#
    )
    .fetch_all(&pool)
    .await
    .expect("copies");
    pool.close().await;
    rows.into_iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} v{} {:?} {:?} {} {:?} {} {} {:?} {}",
                r.exam_code,
                r.numero,
                r.nom,
                r.prenom,
                r.establishment_uai,
                r.version,
                r.grade,
                r.grader_code,
                r.absent,
                r.appreciation,
                r.grading_details,
                r.annotations,
                r.page_keys,
                r.content_sha256
            )
        })
        .collect()
}

/// The pieces recorded as imported: (piece, sha256, candidates, copies,
/// imported_at as text), by piece.
async fn recorded_pieces(app: &TestApp) -> Vec<(String, String, i64, i64, String)> {
    let pool = pool(app).await;
    let rows = sqlx::query!(
        r#"SELECT piece, sha256, candidates, copies, imported_at::text AS "imported_at!"
           FROM import_pieces ORDER BY piece"#
    )
    .fetch_all(&pool)
    .await
    .expect("pieces");
    pool.close().await;
    rows.into_iter()
        .map(|r| (r.piece, r.sha256, r.candidates, r.copies, r.imported_at))
        .collect()
}

fn pieces_of(summary: &ImportSummary) -> copiste::import::PieceCounts {
    summary.pieces.expect("a pieced import counts its pieces")
}

fn piece_counts(imported: u64, skipped: u64, failed: u64) -> copiste::import::PieceCounts {
    copiste::import::PieceCounts {
        imported,
        skipped,
        failed,
    }
}

const ALL_ROWS: Rows = Rows {
    sessions: 1,
    academies: 2,
    establishments: 3,
    exams: 2,
    graders: 2,
    candidates: 4,
    copies: 6,
};

/// A pieced import refreshes the statistics of the tables it grows as
/// they grow, not only at its end. Found at a national scale of 0.4
/// (2026-12-07): on tables never analysed (autovacuum lags a bulk load,
/// or is off), the planner took a session's candidates for a few hundred
/// and hashed all of them for each piece's copies, so that every piece
/// cost more than the one before (85 to 226 ms a piece by 190 000
/// candidates; 83 ms once analysed). Here, with the first refresh after 5
/// rows, the candidates are analysed during the import as well as after
/// it.
#[tokio::test]
async fn a_pieced_import_refreshes_the_statistics_as_its_tables_grow() {
    let export = Export::valid();
    let pieced = Pieced::from(&export);
    let app = TestApp::new().await;
    let options = ImportOptions {
        first_analyze_rows: 5,
        ..ImportOptions::default()
    };
    import_dir_with(&app.db, &app.storage, pieced.path(), &options, &|_| {})
        .await
        .expect("format 2");
    let pool = pool(&app).await;
    let analyses = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'candidates'",
        )
        .fetch_one(&pool)
        .await
        .expect("read the statistics' counts")
    };
    // Statistics counters reach the view within a second or so.
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        (analyses().await >= 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pieced_export_imports_the_same_rows_as_its_manifest() {
    let export = Export::valid();
    let pieced = Pieced::from(&export);
    let whole = TestApp::new().await;
    export.import(&whole).await.expect("format 1");

    let app = TestApp::new().await;
    let steps = std::cell::RefCell::new(Vec::new());
    let summary = import_dir(&app.db, &app.storage, pieced.path(), &|step| {
        steps.borrow_mut().push(step);
    })
    .await
    .expect("format 2");
    assert_eq!(pieces_of(&summary), piece_counts(3, 0, 0));
    assert_eq!(summary.session, "BAC2026");
    assert_eq!(summary.establishments.inserted, 3);
    assert_eq!(summary.candidates.inserted, 4);
    assert_eq!(summary.copies.inserted, 6);
    assert_eq!(summary.scans_uploaded, 8, "9 files, two alike");
    assert_eq!(rows(&app).await, ALL_ROWS);
    assert_eq!(rows(&whole).await, ALL_ROWS);
    assert_eq!(copy_dump(&app).await, copy_dump(&whole).await);
    assert_eq!(objects(&app).len(), 8);

    let recorded = recorded_pieces(&app).await;
    let names: Vec<_> = recorded.iter().map(|r| r.0.clone()).collect();
    let mut expected = vec![
        format!("{}.json", uai(751234)),
        format!("{}.json", uai(691234)),
        format!("{}.json", uai(9_991_234)),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let counts: Vec<_> = recorded.iter().map(|r| (r.2, r.3)).collect();
    // Sorted by file name: 0691234 (1 candidate, 2 copies), 0751234 (2, 3),
    // 9991234 (1, 1).
    assert_eq!(counts, [(1, 2), (2, 3), (1, 1)]);

    let steps = steps.into_inner();
    assert_eq!(steps.first(), Some(&ImportStep::Manifest));
    assert_eq!(steps.last(), Some(&ImportStep::Done));
    assert!(steps.contains(&ImportStep::Pieces { done: 3, total: 3 }));
}

#[tokio::test]
async fn a_bad_piece_is_reported_and_the_others_are_committed() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let pieced = Pieced::from(&export);
    let paris = uai(751234);
    let lyon = uai(691234);
    // A copy of Paris naming Lyon's candidate: not in its piece.
    let mut piece = pieced.piece(&paris);
    piece["copies"][1]["candidate"] = json!(numero(3));
    pieced.write_piece(&paris, &piece);
    // A truncated scan of Lyon's.
    let whole = noisy_jpeg();
    pieced.file("scans/3-philo-2.jpg", &whole[..whole.len() / 2]);

    let result = pieced.import(&app).await;
    let Err(ImportError::PiecesFailed { failed, summary }) = &result else {
        panic!("expected failed pieces, got {result:#?}");
    };
    assert_eq!(pieces_of(summary), piece_counts(1, 0, 2));
    let listed: Vec<String> = failed.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            format!(
                "pieces/{lyon}.json: $.copies[0].pages[1]: scans/3-philo-2.jpg is truncated: \
                 it does not end with the JPEG end-of-image marker"
            ),
            format!(
                "pieces/{paris}.json: $.copies[1].candidate: unknown candidate {}",
                numero(3)
            ),
        ]
    );
    let message = result.expect_err("failed").to_string();
    assert!(message.contains(&listed[0]), "{message}");
    assert!(message.contains(&listed[1]), "{message}");
    // The session and the good piece (Rabat: one candidate, one copy).
    assert_eq!(
        rows(&app).await,
        Rows {
            candidates: 1,
            copies: 1,
            ..ALL_ROWS
        }
    );
    let recorded = recorded_pieces(&app).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].0, format!("{}.json", uai(9_991_234)));

    // Fixed, the import goes on with the failed pieces only.
    pieced.write_piece(&paris, &Pieced::from(&export).piece(&paris));
    pieced.file("scans/3-philo-2.jpg", &jpeg(50));
    let summary = pieced.import(&app).await.expect("fixed");
    assert_eq!(pieces_of(&summary), piece_counts(2, 1, 0));
    assert_eq!(summary.copies.inserted, 5);
    assert_eq!(rows(&app).await, ALL_ROWS);
}

#[tokio::test]
async fn a_piece_that_is_not_json_or_too_large_fails_alone() {
    let app = TestApp::new().await;
    let export = Export::valid();
    let pieced = Pieced::from(&export);
    pieced.file("pieces/0-broken.json", b"{\"format\": 2, \"candidates\": [");
    let big = std::fs::File::create(pieced.path().join("pieces/1-big.json")).expect("create");
    big.set_len(copiste::import::MAX_PIECE_BYTES + 1)
        .expect("sparse file");
    pieced.file(
        "pieces/2-format.json",
        br#"{"format": 1, "candidates": []}"#,
    );

    let result = pieced.import(&app).await;
    let Err(ImportError::PiecesFailed { failed, summary }) = result else {
        panic!("expected failed pieces, got {result:#?}");
    };
    assert_eq!(pieces_of(&summary), piece_counts(3, 0, 3));
    let listed: Vec<String> = failed.iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 3, "{listed:#?}");
    assert!(
        listed[0].starts_with("pieces/0-broken.json: $: not valid JSON: "),
        "{}",
        listed[0]
    );
    assert_eq!(
        listed[1],
        format!(
            "pieces/1-big.json: $: the piece has {} bytes, more than the limit of {} MiB: \
             split it into smaller pieces",
            copiste::import::MAX_PIECE_BYTES + 1,
            copiste::import::MAX_PIECE_BYTES >> 20
        )
    );
    assert_eq!(
        listed[2],
        "pieces/2-format.json: $.format: format 1 is not supported (pieces are format 2)"
    );
    assert_eq!(rows(&app).await, ALL_ROWS);
}

#[tokio::test]
async fn reimporting_skips_committed_pieces_without_reading_their_scans() {
    let app = TestApp::new().await;
    let pieced = Pieced::from(&Export::valid());
    pieced.import(&app).await.expect("first import");
    let recorded = recorded_pieces(&app).await;
    let dump = copy_dump(&app).await;
    let objects_before = objects(&app);

    // Without its scans, a piece that were read again would fail.
    std::fs::remove_dir_all(pieced.path().join("scans")).expect("remove scans");
    let summary = pieced.import(&app).await.expect("second import");
    assert_eq!(pieces_of(&summary), piece_counts(0, 3, 0));
    assert_eq!(summary.candidates, Default::default());
    assert_eq!(summary.copies, Default::default());
    assert_eq!(summary.scans_uploaded + summary.scans_already_stored, 0);
    assert_eq!(summary.exams.unchanged, 2, "session.json is read again");
    assert_eq!(recorded_pieces(&app).await, recorded, "no record rewritten");
    assert_eq!(copy_dump(&app).await, dump);
    assert_eq!(objects(&app), objects_before);
}

#[tokio::test]
async fn a_changed_piece_is_imported_again() {
    let app = TestApp::new().await;
    let pieced = Pieced::from(&Export::valid());
    pieced.import(&app).await.expect("first import");
    let recorded = recorded_pieces(&app).await;
    let lyon = uai(691234);
    let mut piece = pieced.piece(&lyon);
    assert_eq!(piece["copies"][0]["candidate"], numero(3));
    piece["copies"][0]["grade"] = json!(11.5);
    pieced.write_piece(&lyon, &piece);

    let summary = pieced.import(&app).await.expect("second import");
    assert_eq!(pieces_of(&summary), piece_counts(1, 2, 0));
    assert_eq!(summary.copies.updated, 1);
    assert_eq!(summary.copies.unchanged, 1);
    assert_eq!(summary.candidates.unchanged, 1);
    let versions = copy_versions(&app).await;
    let philo_3 = versions
        .iter()
        .find(|(exam, numero_, _, _)| exam == PHILO && *numero_ == numero(3))
        .expect("copy");
    assert_eq!(philo_3.2, 2, "version bumped");
    assert_eq!(philo_3.3.as_deref(), Some("11.50"));
    assert_eq!(
        versions.iter().filter(|v| v.2 == 1).count(),
        5,
        "{versions:?}"
    );
    let now = recorded_pieces(&app).await;
    let name = format!("{lyon}.json");
    let before = recorded.iter().find(|r| r.0 == name).expect("recorded");
    let after = now.iter().find(|r| r.0 == name).expect("recorded");
    assert_ne!(before.1, after.1, "new content hash");
    for (before, after) in recorded.iter().zip(&now).filter(|(r, _)| r.0 != name) {
        assert_eq!(before, after);
    }
}

#[tokio::test]
async fn an_interrupted_import_resumes_after_the_committed_pieces() {
    let app = TestApp::new().await;
    let pieced = Pieced::from(&Export::valid());
    // Interrupted after the first piece: the others are not there yet.
    let lyon = uai(691234);
    let aside = tempfile::tempdir().expect("tempdir");
    let later = [uai(751234), uai(9_991_234)];
    for code in &later {
        std::fs::rename(
            pieced.path().join(format!("pieces/{code}.json")),
            aside.path().join(format!("{code}.json")),
        )
        .expect("move aside");
    }
    let summary = pieced.import(&app).await.expect("first piece");
    assert_eq!(pieces_of(&summary), piece_counts(1, 0, 0));
    assert_eq!(summary.copies.inserted, 2);
    for code in &later {
        std::fs::rename(
            aside.path().join(format!("{code}.json")),
            pieced.path().join(format!("pieces/{code}.json")),
        )
        .expect("move back");
    }
    // The first piece's own scans are gone: it must not be read again.
    for scan in ["3-philo-1", "3-philo-2", "3-maths-1", "3-maths-copy"] {
        std::fs::remove_file(pieced.path().join(format!("scans/{scan}.jpg"))).expect("remove");
    }
    let summary = pieced.import(&app).await.expect("resumed");
    assert_eq!(pieces_of(&summary), piece_counts(2, 1, 0));
    assert_eq!(summary.copies.inserted, 4);
    assert_eq!(summary.copies.updated + summary.copies.unchanged, 0);
    assert_eq!(rows(&app).await, ALL_ROWS);
    let recorded = recorded_pieces(&app).await;
    assert_eq!(recorded.len(), 3);
    assert!(recorded.iter().any(|r| r.0 == format!("{lyon}.json")));
}

#[tokio::test]
async fn an_export_with_both_formats_is_refused() {
    let app = TestApp::new().await;
    let export = Export::valid();
    export.write();
    export.file("session.json", br#"{"format": 2}"#);
    let result = import_dir(&app.db, &app.storage, export.path(), &|_| {}).await;
    let Err(ImportError::Layout(message)) = result else {
        panic!("expected a layout error, got {result:#?}");
    };
    assert!(
        message.contains("both manifest.json (format 1) and session.json (format 2)"),
        "{message}"
    );
    assert_eq!(rows(&app).await, NO_ROWS);

    // Neither: a read error naming both.
    let empty = tempfile::tempdir().expect("tempdir");
    let result = import_dir(&app.db, &app.storage, empty.path(), &|_| {}).await;
    let Err(ImportError::Read(error)) = result else {
        panic!("expected a read error, got {result:#?}");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("neither manifest.json (format 1) nor session.json (format 2)"),
        "{message}"
    );
}

#[tokio::test]
async fn session_json_is_checked_before_any_piece() {
    let app = TestApp::new().await;
    let export = Export::valid();
    export.import(&app).await.expect("format 1");
    let pieced = Pieced::from(&export);
    let mut session: Value =
        serde_json::from_slice(&std::fs::read(pieced.path().join("session.json")).expect("read"))
            .expect("json");
    session["session"] = json!({"code": "BAC2027", "name": "Baccalauréat 2027"});
    pieced.file("session.json", &serde_json::to_vec(&session).expect("json"));
    let result = pieced.import(&app).await;
    let Err(ImportError::InvalidFile { file, problems }) = &result else {
        panic!("expected an invalid session.json, got {result:#?}");
    };
    assert_eq!(file, "session.json");
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "$.exams[0].code: exam BAC26-PHILO already belongs to session BAC2026, not BAC2027",
            "$.exams[1].code: exam BAC26-MATHS already belongs to session BAC2026, not BAC2027",
        ]
    );
    let message = result.expect_err("invalid").to_string();
    assert!(
        message.contains("session.json: $.exams[0].code: exam BAC26-PHILO"),
        "{message}"
    );
    assert_eq!(rows(&app).await.sessions, 1);
    assert!(recorded_pieces(&app).await.is_empty());

    // A field problem is reported with its path, and nothing is written.
    session["session"] = json!({"code": "BAC2027", "name": "Baccalauréat 2027"});
    session["graders"][1]["academy"] = json!("A99");
    session["exams"] = json!([]);
    session["copies"] = json!([]);
    pieced.file("session.json", &serde_json::to_vec(&session).expect("json"));
    let result = pieced.import(&app).await;
    let Err(ImportError::InvalidFile { problems, .. }) = &result else {
        panic!("expected an invalid session.json, got {result:#?}");
    };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "$.graders[1].academy: unknown academy A99",
            "$.copies: unknown field",
        ]
    );
    assert_eq!(rows(&app).await.sessions, 1);
}

/// Writes a pieced (format-2) export for timing `copiste import` on the
/// release binary: `COPISTE_PIECED_PIECES` pieces (default 50) of
/// `COPISTE_PIECED_CANDIDATES` candidates each (default 152) with one
/// copy of each of 5 exams, 1 page each, the pages drawn from a pool of
/// 300 distinct small JPEGs, into `COPISTE_PIECED_DIR`. Run with
/// `COPISTE_PIECED_DIR=/var/tmp/pieced cargo test --test integration
/// write_pieced_export -- --ignored --nocapture`.
#[test]
#[ignore = "generator run by scripts/time-pieced-import; writes to COPISTE_PIECED_DIR"]
fn write_pieced_export() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let out = PathBuf::from(std::env::var("COPISTE_PIECED_DIR").expect("COPISTE_PIECED_DIR"));
    let pieces = var("COPISTE_PIECED_PIECES", 50);
    let per_piece = var("COPISTE_PIECED_CANDIDATES", 152);
    let started = Instant::now();
    const EXAMS: usize = 5;
    const POOL: usize = 300;
    const ACADEMIES: usize = 30;
    std::fs::create_dir_all(out.join("scans")).expect("mkdir scans");
    std::fs::create_dir_all(out.join("pieces")).expect("mkdir pieces");
    for n in 0..POOL {
        let mut pixels = [128u8; 256];
        for (bit, pixel) in pixels.iter_mut().step_by(7).take(12).enumerate() {
            *pixel = if n >> bit & 1 == 1 { 255 } else { 0 };
        }
        std::fs::write(out.join(format!("scans/{n:03}.jpg")), jpeg_of(&pixels)).expect("scan");
    }
    let establishment = |e: usize| uai(100_000 + e as u32);
    let session = json!({
        "format": 2,
        "session": {"code": "NAT26", "name": "Session nationale"},
        "academies": (0..ACADEMIES)
            .map(|a| json!({"code": format!("A{a:02}"), "name": format!("Académie {a}")}))
            .collect::<Vec<_>>(),
        "establishments": (0..pieces)
            .map(|e| json!({"uai": establishment(e), "name": format!("Lycée {e}"),
                            "academy": format!("A{:02}", e % ACADEMIES)}))
            .collect::<Vec<_>>(),
        "exams": (0..EXAMS)
            .map(|x| json!({"code": format!("NAT26-{x}"), "subject": format!("Matière {x}"), "kind": "ponctuel"}))
            .collect::<Vec<_>>(),
        "graders": (0..POOL)
            .map(|g| json!({"code": format!("G{g:04}"), "nom": format!("Nom{g}"), "prenom": "Anne",
                            "academy": format!("A{:02}", g % ACADEMIES)}))
            .collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("session.json"),
        serde_json::to_vec(&session).expect("json"),
    )
    .expect("session.json");
    for e in 0..pieces {
        let uai = establishment(e);
        let mut candidates = Vec::with_capacity(per_piece);
        let mut copies = Vec::with_capacity(per_piece * EXAMS);
        for c in 0..per_piece {
            let n = e * per_piece + c;
            let numero = format!("N{n:09}");
            candidates.push(json!({"numero": numero, "nom": format!("Nom{n}"),
                                   "prenom": "Prénom", "establishment": uai}));
            for x in 0..EXAMS {
                let i = n * EXAMS + x;
                copies.push(json!({
                    "exam": format!("NAT26-{x}"), "candidate": numero,
                    "grader": format!("G{:04}", i % POOL), "grade": (i % 2001) as f64 / 100.0,
                    "grading_details": [{"question": "1", "mark": 1, "max": 2}],
                    "annotations": [{"page": 1, "x": 0.5, "y": 0.5, "kind": "comment", "text": "ok"}],
                    "pages": [format!("scans/{:03}.jpg", (i * 7919) % POOL)]
                }));
            }
        }
        let piece = json!({"format": 2, "candidates": candidates, "copies": copies});
        std::fs::write(
            out.join(format!("pieces/{uai}.json")),
            serde_json::to_vec(&piece).expect("json"),
        )
        .expect("piece");
    }
    eprintln!(
        "wrote {pieces} pieces, {} copies, to {} in {:?}",
        pieces * per_piece * EXAMS,
        out.display(),
        started.elapsed()
    );
}

/// A valid export whose import fails after its validation writes nothing
/// half: when the store refuses the scans (its root is a file, not a
/// folder), no row is written; when the database fails in the middle of
/// the writing (a trigger refuses the first copy, after the candidates
/// were written in the same transaction), no row stays. Once the fault is
/// gone, the same export imports whole.
#[tokio::test]
async fn an_import_that_fails_after_validation_writes_nothing() {
    let app = TestApp::new().await;
    let export = Export::valid();

    // The store fails: its root cannot hold a folder.
    let root = app.dir.path().join("objects");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(&root, b"not a folder").expect("a file in the root's place");
    match export.import(&app).await {
        Err(ImportError::Storage(e)) => {
            assert!(!format!("{e:#}").is_empty());
        }
        other => panic!("expected the store's failure, got {other:?}"),
    }
    assert_eq!(rows(&app).await, NO_ROWS);
    std::fs::remove_file(&root).expect("remove the file");
    std::fs::create_dir_all(&root).expect("the root again");

    // The database fails while writing the copies.
    let pool = pool(&app).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_copy() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$;
         CREATE TRIGGER refuse_copy BEFORE INSERT ON copies
           FOR EACH ROW EXECUTE FUNCTION refuse_copy();",
    )
    .execute(&pool)
    .await
    .expect("the trigger");
    match export.import(&app).await {
        Err(ImportError::Database(e)) => {
            assert!(format!("{e:#}").contains("the disk is full"), "{e:#}");
        }
        other => panic!("expected the database's failure, got {other:?}"),
    }
    assert_eq!(rows(&app).await, NO_ROWS);

    sqlx::raw_sql("DROP TRIGGER refuse_copy ON copies; DROP FUNCTION refuse_copy();")
        .execute(&pool)
        .await
        .expect("drop the trigger");
    export
        .import(&app)
        .await
        .expect("the import once the faults are gone");
    assert_eq!(rows(&app).await.copies, 6);
}
