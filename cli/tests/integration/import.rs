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

/// Imports `export` with `options`, failing the test if it takes more than
/// ten seconds.
async fn import_quickly(
    app: &TestApp,
    export: &Export,
    options: &ImportOptions,
) -> Option<Result<ImportSummary, ImportError>> {
    export.write();
    let import = import_dir_with(&app.db, &app.storage, export.path(), options, &|_| {});
    tokio::time::timeout(std::time::Duration::from_secs(10), import)
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

    let started = Instant::now();
    let result = import_quickly(&app, &export, &ImportOptions::default())
        .await
        .expect("the import ended within 10 s");
    assert_eq!(
        problems(result),
        [
            "$.copies[0].pages[0]: scans/1-philo-1.jpg is not a regular file (a symbolic link to a character device); scans must be regular files",
            "$.copies[0].pages[1]: scans/1-philo-2.jpg is not a regular file (a symbolic link to a character device); scans must be regular files",
        ]
    );
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
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
    };
    let result = import_quickly(&app, &export, &options)
        .await
        .expect("the import ended within 10 s");
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
    };
    import_quickly(&app, &export, &options)
        .await
        .expect("the import ended within 10 s")
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
/// `cargo test --release --test integration import_bench -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark; writes hundreds of thousands of files"]
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
