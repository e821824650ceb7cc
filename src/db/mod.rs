//! PostgreSQL adapter: the pool, migrations, transactions and every SQL
//! query, grouped by domain in submodules. The only module that names
//! `sqlx` types; the rest of the crate sees [`Db`] and [`Tx`].

pub mod access;
pub mod catalog;
pub mod closure;
pub mod jobs;
pub mod metrics;
pub mod render;
pub mod schedule;
pub mod statistics;
pub mod types;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use url::Url;

pub(crate) use sqlx::PgPool;

/// A pool of connections to the system of record; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pool: PgPool,
    /// Connections for the claims, lease extensions and outcomes of runs,
    /// with cached generic plans (`plan_cache_mode = force_generic_plan`)
    /// and commits that do not wait for the WAL to reach the disk
    /// (`synchronous_commit = off`).
    ///
    /// A connection keeps the plan it made at a statement's first
    /// execution, typically while the ledger holds no queued job: a plan
    /// that trusts those statistics (scan the few queued or running jobs
    /// of the `jobs_active` index, or the whole small table) would scan
    /// every queued job at each claim once a backlog arrives. So these
    /// statements look each job up, and lock it, by its id alone (a
    /// lateral lookup per id, then `id = ANY(ids)`), and compare its
    /// status, worker and attempt only once it is locked: an index that
    /// also holds the status or is restricted to it (`jobs_active_recent`,
    /// on creation and id, of the queued and running jobs) would otherwise
    /// be chosen for the lookup and read every queued job before finding
    /// the one id. Their connections have `enable_seqscan = off`: the
    /// primary key is their only way to the rows. A Postgres crash may
    /// forget the last fraction of a second of them; the jobs concerned
    /// then run again after their lease, as after a worker crash, which
    /// every job tolerates (jobs are idempotent). Enqueues and every domain write
    /// stay fully durable on [`Db::pool`]. Opened on first use.
    pub(crate) runs: PgPool,
}

/// Connections of [`Db::runs`]: the claim and outcome writers and the
/// heartbeat of a worker.
const RUNS_CONNECTIONS: u32 = 4;

/// A transaction of the caller's, into which domain changes and job
/// enqueues are written together.
pub struct Tx {
    pub(crate) inner: Transaction<'static, Postgres>,
}

impl Tx {
    /// Commits everything written in the transaction.
    pub async fn commit(self) -> anyhow::Result<()> {
        self.inner
            .commit()
            .await
            .context("committing a transaction")
    }
}

impl Db {
    /// Connects a pool of at most `max_connections`.
    pub async fn connect(url: &Url, max_connections: u32) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .as_str()
            .parse()
            .with_context(|| format!("parsing database.url {}", redact(url)))?;
        let runs = PgPoolOptions::new()
            .max_connections(RUNS_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone().options([
                ("synchronous_commit", "off"),
                // Their statements reach rows by primary key whatever the
                // statistics, so one generic plan serves every execution;
                // left to choose, Postgres planned them anew at every
                // execution (about a fifth of a claim's time).
                ("plan_cache_mode", "force_generic_plan"),
                // A plan made on a young or idle ledger must not scan the
                // table (see `runs` above).
                ("enable_seqscan", "off"),
            ]));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
        Ok(Self { pool, runs })
    }

    /// Opens every connection both pools may hold, as a service that has
    /// been running a while has them (benchmarks measure that state: a
    /// connection opened mid-run costs a backend start, a TLS handshake
    /// and a cold catalog cache, about 100 ms of this 2-core machine).
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        for pool in [&self.pool, &self.runs] {
            let n = pool.options().get_max_connections() as usize;
            let held = futures::future::try_join_all((0..n).map(|_| async move {
                let mut conn = pool.acquire().await?;
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                anyhow::Ok(conn)
            }))
            .await
            .context("opening the pools' connections")?;
            drop(held);
        }
        Ok(())
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .context("applying migrations")
    }

    /// The connection pool, for the tools crate's own queries (the
    /// benchmarks' statements, in `tools/src/queries.rs`): that module is
    /// an adapter of its own, and the only user of this outside `db`.
    pub fn pg_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> anyhow::Result<Tx> {
        let inner = self.pool.begin().await.context("starting a transaction")?;
        Ok(Tx { inner })
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.runs.close().await;
        self.pool.close().await;
    }
}

/// Checks that `name` can be written into SQL as a quoted identifier.
fn check_database_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {name:?} must be letters, digits and underscores"
    );
    Ok(())
}

/// A one-connection pool to the `postgres` database of the server of
/// `server_url`, for creating and dropping databases.
async fn admin_pool(server_url: &Url) -> anyhow::Result<PgPool> {
    let mut admin = server_url.clone();
    admin.set_path("/postgres");
    let options: PgConnectOptions = admin.as_str().parse().context("parsing the server URL")?;
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(&admin)))
}

/// Whether the server of `pool` has a database `name`.
async fn database_exists(pool: &PgPool, name: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        name
    )
    .fetch_one(pool)
    .await
    .with_context(|| format!("looking up database {name}"))
}

/// Creates database `name` on the server of `server_url` (which names any
/// existing database, e.g. `postgres`) unless it exists, and returns the
/// URL of the new database.
pub async fn ensure_database(server_url: &Url, name: &str) -> anyhow::Result<Url> {
    check_database_name(name)?;
    let pool = admin_pool(server_url).await?;
    let exists = database_exists(&pool, name).await?;
    if !exists {
        // The name was checked above; identifiers cannot be bound parameters.
        let sql = format!("CREATE DATABASE \"{name}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    pool.close().await;
    let mut url = server_url.clone();
    url.set_path(&format!("/{name}"));
    Ok(url)
}

/// The name of a database of the server of `server_url` that holds every
/// migration and nothing else, to copy fresh databases from (`CREATE
/// DATABASE … TEMPLATE`: much faster than migrating each one; the tests use
/// it). The name carries a hash of the migrations, so that a new migration
/// makes a new template. Whoever comes first builds it under a temporary
/// name and renames it when complete, so a half-built template is never
/// used; a concurrent builder's copy is dropped.
pub async fn migrated_template(server_url: &Url) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let migrator = sqlx::migrate!("./migrations");
    let mut hash = sha2::Sha256::new();
    for m in migrator.iter() {
        hash.update(m.version.to_le_bytes());
        hash.update(&m.checksum);
    }
    let name = format!("copiste_template_{}", &hex::encode(hash.finalize())[..16]);
    let pool = admin_pool(server_url).await?;
    let exists = database_exists(&pool, &name).await?;
    if !exists {
        let building = format!("{name}_{}", uuid::Uuid::new_v4().simple());
        let url = ensure_database(server_url, &building).await?;
        let db = Db::connect(&url, 2).await?;
        db.migrate().await?;
        db.close().await;
        let sql = format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await {
            // Another builder renamed its copy first: use that one.
            drop_database(server_url, &building).await?;
            let taken = database_exists(&pool, &name).await?;
            anyhow::ensure!(taken, "naming the template database {name}: {e}");
        }
    }
    pool.close().await;
    Ok(name)
}

/// Creates database `name` as a copy of database `template` (see
/// [`migrated_template`]) and returns its URL.
pub async fn create_from_template(
    server_url: &Url,
    name: &str,
    template: &str,
) -> anyhow::Result<Url> {
    check_database_name(name)?;
    check_database_name(template)?;
    let pool = admin_pool(server_url).await?;
    // The names were checked above; identifiers cannot be bound parameters.
    let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .with_context(|| format!("creating database {name} from {template}"))?;
    pool.close().await;
    let mut url = server_url.clone();
    url.set_path(&format!("/{name}"));
    Ok(url)
}

/// Drops database `name` of the server of `server_url`, if it exists,
/// closing whatever connections it still has (benchmarks' databases).
pub async fn drop_database(server_url: &Url, name: &str) -> anyhow::Result<()> {
    check_database_name(name)?;
    let pool = admin_pool(server_url).await?;
    // The name was checked above; identifiers cannot be bound parameters.
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    pool.close().await;
    Ok(())
}

/// A URL safe to print: its password replaced.
pub fn redact(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("<redacted>"));
    }
    url.to_string()
}

/// Notifications of new deliverable jobs (LISTEN `copiste_jobs`).
pub struct JobNotifications {
    listener: sqlx::postgres::PgListener,
}

impl JobNotifications {
    /// Starts listening on a dedicated connection.
    pub async fn listen(db: &Db) -> anyhow::Result<Self> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
            .await
            .context("opening a LISTEN connection")?;
        listener
            .listen("copiste_jobs")
            .await
            .context("listening on copiste_jobs")?;
        Ok(Self { listener })
    }

    /// Waits for the next notification. After a lost connection it
    /// reconnects and returns, since notifications may have been missed.
    pub async fn recv(&mut self) -> anyhow::Result<()> {
        self.listener
            .recv()
            .await
            .map(|_| ())
            .context("waiting for job notifications")
    }
}

impl Db {
    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await
            .context("PostgreSQL does not answer")?;
        Ok(())
    }
}
