//! Which dead jobs a later run of the same unit replaced, for the jobs
//! list.

use std::collections::HashMap;

use anyhow::Context as _;
use uuid::Uuid;

use crate::db::Db;

/// For each dead job among `ids` whose unit a later job replaced, that
/// later job: the newest job created after it, of the same kind (or, for a
/// kind of `family`, of any kind of `family`), naming the same exam and the
/// same establishment or academy (both absent when the dead job names
/// neither), and succeeded, queued or running. A job whose payload names
/// no exam is nobody's unit and is never replaced.
///
/// Each dead job's look-up reads the indexes of its establishment, its
/// academy or its exam from its creation on, newest first: the finished
/// jobs' (migration 15) for a succeeded one, the active jobs' for a
/// queued or running one: the unit's jobs (`unit_jobs`, inlined where
/// it is read) are read in two halves, so that each half's partial
/// indexes serve it. A unit has a handful of jobs, so a page of the list
/// costs about as many index entries as it shows dead jobs.
pub async fn superseded(
    db: &Db,
    ids: &[Uuid],
    family: &[String],
) -> anyhow::Result<HashMap<Uuid, Uuid>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"
        WITH dead AS MATERIALIZED (
            SELECT id, created_at, payload->>'exam' AS exam,
                   payload->>'establishment' AS establishment,
                   payload->>'academy' AS academy,
                   CASE WHEN kind = ANY($2::text[]) THEN $2::text[] ELSE ARRAY[kind] END
                       AS kinds
            FROM jobs
            WHERE id = ANY($1::uuid[]) AND status = 'dead' AND payload->>'exam' IS NOT NULL
        )
        SELECT d.id AS "dead!", later.id AS "later!"
        FROM dead d
        CROSS JOIN LATERAL (
            WITH unit_jobs AS NOT MATERIALIZED (
                SELECT l.* FROM jobs l
                WHERE d.establishment IS NOT NULL
                  AND l.payload->>'establishment' = d.establishment
                  AND (l.created_at, l.id) > (d.created_at, d.id)
                  AND l.payload->>'exam' = d.exam AND l.kind = ANY (d.kinds)
                UNION ALL
                SELECT l.* FROM jobs l
                WHERE d.establishment IS NULL AND d.academy IS NOT NULL
                  AND l.payload->>'academy' = d.academy
                  AND (l.created_at, l.id) > (d.created_at, d.id)
                  AND l.payload->>'exam' = d.exam AND l.kind = ANY (d.kinds)
                  AND l.payload->>'establishment' IS NULL
                UNION ALL
                SELECT l.* FROM jobs l
                WHERE d.establishment IS NULL AND d.academy IS NULL
                  AND l.payload->>'exam' = d.exam
                  AND (l.created_at, l.id) > (d.created_at, d.id)
                  AND l.kind = ANY (d.kinds)
                  AND l.payload->>'establishment' IS NULL AND l.payload->>'academy' IS NULL
            )
            SELECT c.id FROM (
                (SELECT id, created_at FROM unit_jobs WHERE status = 'succeeded'
                 ORDER BY created_at DESC, id DESC LIMIT 1)
                UNION ALL
                (SELECT id, created_at FROM unit_jobs WHERE status IN ('queued', 'running')
                 ORDER BY created_at DESC, id DESC LIMIT 1)
            ) c
            ORDER BY c.created_at DESC, c.id DESC LIMIT 1
        ) later
        "#,
        ids,
        family
    )
    .fetch_all(&db.pool)
    .await
    .context("looking for the runs that replaced dead jobs")?;
    Ok(rows.into_iter().map(|r| (r.dead, r.later)).collect())
}
