//! Harmonisation passes: the copies a validation names, the pass
//! recorded over them, and the establishments it validated.

use anyhow::Context as _;

use crate::db::types::decode_uai;
use crate::db::{Db, Tx};
use crate::domain::Uai;

/// A copy named in a harmonisation validation, as found.
#[derive(Debug, Clone)]
pub struct CandidateCopy {
    pub numero: String,
    pub establishment: String,
    pub graded: bool,
    pub validated: bool,
}

/// The copies of `exam` (within `academy` if given), all of them or those
/// of the candidates `numeros`.
pub async fn exam_copies(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
    numeros: Option<&[String]>,
) -> anyhow::Result<Vec<CandidateCopy>> {
    let rows = sqlx::query!(
        r#"SELECT ca.numero, ca.establishment_uai,
                  (c.grade IS NOT NULL OR c.absent) AS "graded!",
                  (c.validated_pass IS NOT NULL) AS "validated!"
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN establishments e ON e.uai = ca.establishment_uai
           WHERE c.exam_code = $1
             AND ($2::text IS NULL OR e.academy_code = $2)
             AND ($3::text[] IS NULL OR ca.numero = ANY($3))
           ORDER BY ca.numero"#,
        exam,
        academy,
        numeros as Option<&[String]>
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the copies to validate")?;
    Ok(rows
        .into_iter()
        .map(|r| CandidateCopy {
            numero: r.numero,
            establishment: r.establishment_uai,
            graded: r.graded,
            validated: r.validated,
        })
        .collect())
}

/// Records a harmonisation pass over the copies of `numeros` in `tx`:
/// copies not validated before are validated by it. Returns the pass id
/// and how many copies it validated (0: nothing new).
pub async fn insert_pass(
    tx: &mut Tx,
    exam: &str,
    academy: Option<&str>,
    numeros: &[String],
    by: &str,
) -> anyhow::Result<(i64, i64)> {
    let pass = sqlx::query_scalar!(
        "INSERT INTO harmonisation_passes (exam_code, academy_code, copies, created_by)
         VALUES ($1, $2, 0, $3) RETURNING id",
        exam,
        academy,
        by
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("recording the pass")?;
    let validated = sqlx::query_scalar!(
        r#"
        WITH v AS (
            UPDATE copies c SET validated_pass = $3
            FROM candidates ca
            WHERE ca.id = c.candidate_id AND c.exam_code = $1 AND ca.numero = ANY($2)
              AND c.validated_pass IS NULL
            RETURNING c.id
        )
        SELECT count(*) AS "n!" FROM v
        "#,
        exam,
        numeros,
        pass
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("validating the copies")?;
    sqlx::query!(
        "UPDATE harmonisation_passes SET copies = $2 WHERE id = $1",
        pass,
        validated as i32
    )
    .execute(&mut *tx.inner)
    .await
    .context("counting the pass's copies")?;
    Ok((pass, validated))
}

/// The establishments of the copies a pass validated, or that an earlier
/// pass validated within the same scope, in UAI order.
pub async fn validated_establishments(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
) -> anyhow::Result<Vec<Uai>> {
    let uais = sqlx::query_scalar!(
        "SELECT DISTINCT ca.establishment_uai
         FROM copies c
         JOIN candidates ca ON ca.id = c.candidate_id
         JOIN establishments e ON e.uai = ca.establishment_uai
         WHERE c.exam_code = $1 AND c.validated_pass IS NOT NULL
           AND ($2::text IS NULL OR e.academy_code = $2)
         ORDER BY 1",
        exam,
        academy
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the establishments of validated copies")?;
    uais.iter()
        .map(|u| decode_uai("candidates.establishment_uai", u))
        .collect()
}
