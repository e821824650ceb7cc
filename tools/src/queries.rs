//! The SQL of the tools (benchmarks, the national rehearsal, the stand-in
//! target's durable keys): the tools crate's own database adapter, the
//! only module of it that names sqlx.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use uuid::Uuid;

use copiste::db::Db;

/// Runs single-row UPDATE transactions on `connections` connections (each
/// on its own row) for `duration`; returns how many committed. With
/// `flushed`, each commit waits for its WAL to reach the disk, as every
/// write of the library's pool does; without, the connections (of their own)
/// have `synchronous_commit = off`, as the worker's claims and outcomes
/// do: the two rates show how much of the baseline is the disk's.
pub async fn update_baseline(
    db: &Db,
    connections: u32,
    duration: Duration,
    flushed: bool,
) -> anyhow::Result<u64> {
    let pool = if flushed {
        db.pg_pool().clone()
    } else {
        let options = db
            .pg_pool()
            .connect_options()
            .as_ref()
            .clone()
            .options([("synchronous_commit", "off")]);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .context("connecting the baseline's unflushed connections")?
    };
    // The baseline's table exists only in bench databases, so these
    // statements cannot be checked at compile time against the schema.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_counters (id integer PRIMARY KEY, n bigint NOT NULL)",
    )
    .execute(&pool)
    .await
    .context("creating the baseline table")?;
    sqlx::query("INSERT INTO bench_counters SELECT g, 0 FROM generate_series(1, $1) g ON CONFLICT DO NOTHING")
        .bind(connections as i32)
    .execute(&pool)
    .await
    .context("filling the baseline table")?;
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for row in 1..=connections as i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                sqlx::query("UPDATE bench_counters SET n = n + 1 WHERE id = $1")
                    .bind(row)
                    .execute(&pool)
                    .await?;
                n += 1;
            }
            Ok::<u64, sqlx::Error>(n)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task
            .await
            .context("baseline task")?
            .context("baseline update")?;
    }
    if !flushed {
        pool.close().await;
    }
    Ok(total)
}

/// Whether every job is in a final status. Cheap whatever the backlog:
/// it stops at the first queued or running row.
pub async fn all_finished(db: &Db) -> anyhow::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE status IN ('queued', 'running')) AS "done!""#
    )
    .fetch_one(db.pg_pool())
    .await
    .context("looking for unfinished jobs")
}

/// Whether a job has been claimed at least once.
pub async fn started(db: &Db, id: Uuid) -> anyhow::Result<bool> {
    let started = sqlx::query_scalar!(
        r#"SELECT started_at IS NOT NULL AS "started!" FROM jobs WHERE id = $1"#,
        id
    )
    .fetch_one(db.pg_pool())
    .await
    .context("reading a job")?;
    Ok(started)
}

/// Job ids handed to Redis and not yet claimed.
pub async fn in_flight(db: &Db) -> anyhow::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM jobs WHERE status = 'queued' AND pushed_at IS NOT NULL"#
    )
    .fetch_one(db.pg_pool())
    .await
    .context("counting ids in flight")
}

/// Creates the table in which the benchmark's stub target remembers the
/// keys it accepted (bench databases only).
pub async fn create_stub_keys(db: &Db) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_stub_keys (key text PRIMARY KEY)")
        .execute(db.pg_pool())
        .await
        .context("creating the stub's key table")?;
    Ok(())
}

/// Records `keys` as accepted by the stub; returns, for each key, whether
/// it is new (an effect) rather than already known (a duplicate).
///
/// The keys go in statements of at most [`STUB_STATEMENT_BYTES`], in one
/// transaction. sqlx 0.9.0 leaves Nagle's algorithm on for TCP connections
/// (transact-rs/sqlx#4335, fixed by #4336, not released yet): a message
/// larger than the socket's send buffer (16 KiB at first on Linux) goes out
/// in two writes, and the second waits ~40 ms for the server's delayed ACK.
/// A batch of 500 grade keys is just above that, so one statement per batch
/// would measure the stall rather than the stub.
pub async fn accept_stub_keys(db: &Db, keys: &[String]) -> anyhow::Result<Vec<bool>> {
    let mut tx = db
        .pg_pool()
        .begin()
        .await
        .context("starting a transaction")?;
    let mut new = std::collections::HashSet::with_capacity(keys.len());
    let mut rest = keys;
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|k| {
                bytes += k.len() + 4;
                bytes <= STUB_STATEMENT_BYTES
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let fresh: Vec<String> = sqlx::query_scalar(
            "INSERT INTO bench_stub_keys (key) SELECT * FROM UNNEST($1::text[])
             ON CONFLICT DO NOTHING RETURNING key",
        )
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await
        .context("recording the stub's keys")?;
        new.extend(fresh);
    }
    tx.commit().await.context("committing the stub's keys")?;
    Ok(keys.iter().map(|k| new.contains(k)).collect())
}

/// The most key bytes the stub binds in one statement: well under the
/// 16 KiB a new TCP socket can send at once.
const STUB_STATEMENT_BYTES: usize = 8 * 1024;

/// A national catalogue for the search bench: `establishments` schools
/// (UAIs given, since their check letters are computed in Rust) spread
/// over 30 academies, and `candidates` candidates spread evenly over
/// them, each with a copy of `exam` (ponctuel). Names come from short
/// lists of French and foreign noms and prénoms with accents, combined so
/// that a three-letter term matches a few candidates of an establishment.
pub async fn national_catalogue(
    db: &Db,
    exam: &str,
    uais: &[String],
    candidates: i64,
) -> anyhow::Result<()> {
    let mut tx = db
        .pg_pool()
        .begin()
        .await
        .context("starting the catalogue")?;
    sqlx::query!(
        "INSERT INTO academies (code, name)
         SELECT 'A' || lpad(g::text, 2, '0'), 'Académie ' || g FROM generate_series(1, 30) g"
    )
    .execute(&mut *tx)
    .await
    .context("inserting academies")?;
    sqlx::query!(
        "INSERT INTO establishments (uai, name, academy_code)
         SELECT u, 'Lycée ' || n, 'A' || lpad((1 + n % 30)::text, 2, '0')
         FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n)",
        uais
    )
    .execute(&mut *tx)
    .await
    .context("inserting establishments")?;
    sqlx::query!("INSERT INTO sessions (code, name) VALUES ('BENCH', 'Bench session')")
        .execute(&mut *tx)
        .await
        .context("inserting the session")?;
    sqlx::query!(
        "INSERT INTO exams (code, session_code, subject, kind) VALUES ($1, 'BENCH', 'Philosophie', 'ponctuel')",
        exam
    )
    .execute(&mut *tx)
    .await
    .context("inserting the exam")?;
    sqlx::query!(
        r#"INSERT INTO candidates (session_code, numero, nom, prenom, establishment_uai)
           SELECT 'BENCH', 'N' || lpad(g::text, 9, '0'),
                  (ARRAY['Martin','Bernard','Thomas','Petit','Robert','Richard','Durand','Dubois',
                         'Moreau','Laurent','Simon','Michel','Lefèvre','Leroy','Roux','Müller',
                         'Nguyễn','Şahin','N''Diaye','Kowalski','García','Côté','Bélanger','Østergaard',
                         'Da Silva','Benali','Haddad','Traoré','Le Gall','Fontaine','Chevalier','Girard'])
                         [1 + (g * 7919) % 32],
                  (ARRAY['Hélène','Léa','Chloé','Emma','Inès','Zoé','Jade','Louise','Lucas','Hugo',
                         'Noé','Raphaël','Gabriel','Arthur','Maël','Loïc','Anaïs','Benoît','Joël',
                         'Élodie','Amélie','Françoise','Jérôme','Mathéo','Yanis','Adam','Sacha','Nour'])
                         [1 + (g * 104729) % 28],
                  ($1::text[])[1 + g % cardinality($1::text[])]
           FROM generate_series(1, $2::bigint) g"#,
        uais,
        candidates
    )
    .execute(&mut *tx)
    .await
    .context("inserting candidates")?;
    sqlx::query!(
        "INSERT INTO copies (exam_code, candidate_id, grade, page_keys, content_sha256)
         SELECT $1, id, 10 + id % 10, '{}', 'bench' FROM candidates",
        exam
    )
    .execute(&mut *tx)
    .await
    .context("inserting copies")?;
    tx.commit().await.context("committing the catalogue")?;
    sqlx::query!("ANALYZE")
        .execute(db.pg_pool())
        .await
        .context("analysing the catalogue")?;
    Ok(())
}

/// What a national rehearsal reads of its database after a phase.
#[derive(Debug, Clone, Default)]
pub struct NationalFigures {
    pub establishments: i64,
    pub candidates: i64,
    pub copies: i64,
    /// Copies whose grade Cyclades accepted.
    pub transmitted: i64,
    /// Closure units by state, e.g. `("closed", 412)`.
    pub units: Vec<(String, i64)>,
    /// Jobs by kind and status, e.g. `("closure", "succeeded", 412)`.
    pub jobs: Vec<(String, String, i64)>,
    pub job_events: i64,
    /// Current downloads, the copies they hold and their parts' bytes.
    pub downloads: i64,
    pub download_copies: i64,
    pub download_bytes: i64,
    /// (exam, establishment) pairs with more than one current download of
    /// the same options: a zip built twice.
    pub doubled_downloads: i64,
    /// The database's size on disk.
    pub database_bytes: i64,
}

/// Reads the [`NationalFigures`] of a rehearsal's database.
pub async fn national_figures(db: &Db) -> anyhow::Result<NationalFigures> {
    let counts = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM establishments) AS "establishments!",
                  (SELECT count(*) FROM candidates) AS "candidates!",
                  (SELECT count(*) FROM copies) AS "copies!",
                  (SELECT count(*) FROM grade_exports WHERE state = 'accepted') AS "transmitted!",
                  (SELECT count(*) FROM job_events) AS "job_events!",
                  pg_database_size(current_database()) AS "database_bytes!""#
    )
    .fetch_one(db.pg_pool())
    .await
    .context("counting the rehearsal's rows")?;
    let units = sqlx::query!(
        r#"SELECT state, count(*) AS "n!" FROM closure_units GROUP BY state ORDER BY state"#
    )
    .fetch_all(db.pg_pool())
    .await
    .context("counting closure units")?
    .into_iter()
    .map(|r| (r.state, r.n))
    .collect();
    let jobs = sqlx::query!(
        r#"SELECT kind, status, count(*) AS "n!" FROM jobs GROUP BY kind, status ORDER BY kind, status"#
    )
    .fetch_all(db.pg_pool())
    .await
    .context("counting jobs")?
    .into_iter()
    .map(|r| (r.kind, r.status, r.n))
    .collect();
    let downloads = sqlx::query!(
        r#"SELECT count(*) AS "downloads!",
                  coalesce(sum(copies), 0)::bigint AS "copies!",
                  coalesce(sum((SELECT sum((p ->> 'bytes')::bigint) FROM jsonb_array_elements(parts) p)), 0)::bigint AS "bytes!",
                  (SELECT count(*) FROM (SELECT 1 FROM downloads
                                          GROUP BY exam_code, establishment_uai, options
                                          HAVING count(*) > 1) d) AS "doubled!"
             FROM downloads"#
    )
    .fetch_one(db.pg_pool())
    .await
    .context("counting downloads")?;
    Ok(NationalFigures {
        establishments: counts.establishments,
        candidates: counts.candidates,
        copies: counts.copies,
        transmitted: counts.transmitted,
        units,
        jobs,
        job_events: counts.job_events,
        downloads: downloads.downloads,
        download_copies: downloads.copies,
        download_bytes: downloads.bytes,
        doubled_downloads: downloads.doubled,
        database_bytes: counts.database_bytes,
    })
}

/// What the zip night of some exams must have made: their (exam,
/// establishment) pairs with transmitted copies and no download, and
/// their transmitted copies.
pub struct ZipChecks {
    pub units_without_zip: i64,
    pub transmitted: i64,
}

/// Reads the [`ZipChecks`] of the exams `exams`.
pub async fn zip_checks(db: &Db, exams: &[String]) -> anyhow::Result<ZipChecks> {
    let row = sqlx::query!(
        r#"WITH units AS (
               SELECT c.exam_code, k.establishment_uai, count(*) AS copies
                 FROM grade_exports g
                 JOIN copies c ON c.id = g.copy_id
                 JOIN candidates k ON k.id = c.candidate_id
                WHERE g.state = 'accepted' AND c.exam_code = ANY($1)
                GROUP BY c.exam_code, k.establishment_uai
           )
           SELECT coalesce(sum(copies), 0)::bigint AS "transmitted!",
                  count(*) FILTER (WHERE NOT EXISTS (
                      SELECT 1 FROM downloads d
                       WHERE d.exam_code = units.exam_code
                         AND d.establishment_uai = units.establishment_uai)) AS "without_zip!"
             FROM units"#,
        exams
    )
    .fetch_one(db.pg_pool())
    .await
    .context("counting the zipped exams' units without a zip")?;
    Ok(ZipChecks {
        units_without_zip: row.without_zip,
        transmitted: row.transmitted,
    })
}

/// A sample of `limit` current downloads: exam, establishment, options tag
/// and the copies the zip holds, largest first.
pub async fn sample_downloads(
    db: &Db,
    limit: i64,
) -> anyhow::Result<Vec<(String, String, String, i32)>> {
    Ok(sqlx::query!(
        r#"SELECT exam_code, establishment_uai, options, copies FROM downloads
            ORDER BY copies DESC, exam_code, establishment_uai LIMIT $1"#,
        limit
    )
    .fetch_all(db.pg_pool())
    .await
    .context("sampling downloads")?
    .into_iter()
    .map(|r| (r.exam_code, r.establishment_uai, r.options, r.copies))
    .collect())
}

/// Copies of an (exam, establishment) whose grade Cyclades accepted.
pub async fn transmitted_count(db: &Db, exam: &str, uai: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM grade_exports g
             JOIN copies c ON c.id = g.copy_id
             JOIN candidates k ON k.id = c.candidate_id
            WHERE g.state = 'accepted' AND c.exam_code = $1 AND k.establishment_uai = $2"#,
        exam,
        uai
    )
    .fetch_one(db.pg_pool())
    .await
    .context("counting transmitted copies")
}

/// Jobs of `kind`, with the total and the longest of their runs in
/// milliseconds (from first claim to finish).
pub async fn job_runs(db: &Db, kind: &str) -> anyhow::Result<(i64, f64, f64)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "n!",
                  coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)::float8 * 1000 AS "total_ms!",
                  coalesce(max(extract(epoch FROM finished_at - started_at)), 0)::float8 * 1000 AS "max_ms!"
             FROM jobs WHERE kind = $1 AND finished_at IS NOT NULL"#,
        kind
    )
    .fetch_one(db.pg_pool())
    .await
    .context("reading job runs")?;
    Ok((row.n, row.total_ms, row.max_ms))
}

/// The server's data directory, to check the room left on its disk
/// (`None` when the role may not read it).
pub async fn data_directory(db: &Db) -> Option<String> {
    sqlx::query_scalar!(r#"SELECT current_setting('data_directory', true) AS "dir""#)
        .fetch_one(db.pg_pool())
        .await
        .ok()
        .flatten()
}

/// The numéros of an academy's candidates who have a copy of `exam`, in
/// numéro order.
pub async fn academy_numeros(db: &Db, exam: &str, academy: &str) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT k.numero FROM copies c
             JOIN candidates k ON k.id = c.candidate_id
             JOIN establishments e ON e.uai = k.establishment_uai
            WHERE c.exam_code = $1 AND e.academy_code = $2
            ORDER BY k.numero"#,
        exam,
        academy
    )
    .fetch_all(db.pg_pool())
    .await
    .context("reading an academy's numéros")
}

/// The academy with the most establishments.
pub async fn largest_academy(db: &Db) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar!(
        r#"SELECT academy_code AS "code!" FROM establishments
            GROUP BY academy_code ORDER BY count(*) DESC, academy_code LIMIT 1"#
    )
    .fetch_optional(db.pg_pool())
    .await
    .context("finding the largest academy")
}
