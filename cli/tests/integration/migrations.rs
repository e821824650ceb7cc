//! Migrations that move stored data keep it.
//!
//! Raw SQL throughout: the database is at an old schema, which the `db`
//! functions do not know, and what is checked is the schema's own tables.

use copiste::{config::Config, db::Db, storage::Storage};
use copiste_tools::demo_data::DemoDataOptions;
use serde_json::json;
use sqlx::PgPool;

use crate::support::Scans;

/// The last migration before the Cyclades items left `export_items`.
const BEFORE_GRADE_EXPORTS: i64 = 20261126000005;

#[tokio::test]
async fn the_narrow_ledger_migration_keeps_every_export_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, url) = crate::support::fresh_database().await;
    let pool = PgPool::connect(url.as_str()).await.expect("pool");
    let migrator = sqlx::migrate!("../migrations");
    migrator
        .run_to(BEFORE_GRADE_EXPORTS, &pool)
        .await
        .expect("migrations up to the old ledger");

    // A session, and a closed unit in the old ledger: a Cyclades item per
    // copy (one rejected) and an Imag'In item per grader.
    let config = Config::load_with_overrides(json!({
        "database": {"url": url.as_str()},
        "storage": {"kind": "local", "root": dir.path().join("objects")},
    }))
    .expect("configuration");
    let db = Db::connect(&config.database_url(), 2).await.expect("db");
    let storage = Storage::open(&config.storage).expect("storage");
    let session = dir.path().join("session");
    let opts = DemoDataOptions {
        establishments: 2,
        candidates: 5,
        pages: 1,
        seed: 3,
    };
    crate::support::import_demo_into(&db, &storage, &session, &opts, Scans::Shared).await;
    let uai: String = sqlx::query_scalar(
        "SELECT min(ca.establishment_uai) FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE c.exam_code = 'BAC26-PHILO'",
    )
    .fetch_one(&pool)
    .await
    .expect("an establishment");
    sqlx::query(
        "INSERT INTO closure_units (exam_code, establishment_uai, state)
         VALUES ('BAC26-PHILO', $1, 'closed_with_errors')",
    )
    .bind(&uai)
    .execute(&pool)
    .await
    .expect("unit");
    let grades = sqlx::query(
        "INSERT INTO export_items (target, exam_code, establishment_uai, copy_id, revision, key,
                                   document, state, reason, attempts, accepted_at)
         SELECT 'cyclades', c.exam_code, ca.establishment_uai, c.id, c.version,
                'c:' || c.exam_code || ':' || ca.numero || ':v' || c.version,
                jsonb_build_object('candidate', ca.numero, 'grade', c.grade, 'absent', c.absent),
                CASE WHEN row_number() OVER (ORDER BY c.id) = 1 THEN 'rejected' ELSE 'accepted' END,
                CASE WHEN row_number() OVER (ORDER BY c.id) = 1 THEN 'unknown candidate' END,
                2, now()
         FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE c.exam_code = 'BAC26-PHILO' AND ca.establishment_uai = $1",
    )
    .bind(&uai)
    .execute(&pool)
    .await
    .expect("Cyclades items")
    .rows_affected();
    let counts = sqlx::query(
        "INSERT INTO export_items (target, exam_code, establishment_uai, grader_code, revision, key,
                                   document, state, attempts)
         SELECT 'imagin', 'BAC26-PHILO', $1, c.grader_code, 1,
                'i:BAC26-PHILO:' || $1 || ':' || c.grader_code || ':r1',
                jsonb_build_object('grader', c.grader_code, 'copies', count(*)), 'pending', 1
         FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE c.exam_code = 'BAC26-PHILO' AND ca.establishment_uai = $1
           AND c.grader_code IS NOT NULL
         GROUP BY c.grader_code",
    )
    .bind(&uai)
    .execute(&pool)
    .await
    .expect("Imag'In items")
    .rows_affected();
    assert!(grades > 1 && counts > 0);
    let before: Vec<(String, String, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT target, key, state, reason, attempts FROM export_items ORDER BY key",
    )
    .fetch_all(&pool)
    .await
    .expect("items before");

    migrator.run(&pool).await.expect("the remaining migrations");

    let after: Vec<(String, String, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT target, key, state, reason, attempts FROM export_ledger ORDER BY key",
    )
    .fetch_all(&pool)
    .await
    .expect("items after");
    assert_eq!(
        after, before,
        "every item keeps its key, state, reason and attempts"
    );
    let cyclades_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM count_exports WHERE target = 'cyclades'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(cyclades_left, 0);
    db.close().await;
}
