//! Local services for `copiste demo` and `copiste with-services`: use the
//! configured PostgreSQL and Redis when they answer; otherwise, when the
//! local `initdb`/`postgres` and `redis-server` binaries exist, start
//! throwaway instances on free loopback ports in a temporary directory and
//! remove them when done; otherwise explain how to install them.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use url::Url;

use crate::config::Config;

const INSTALL_HELP: &str = "install and start them, e.g. on Debian/Ubuntu:\n  \
    sudo apt-get install -y postgresql redis-server\n  \
    sudo pg_ctlcluster $(ls /etc/postgresql) main start\n  \
    redis-server --daemonize yes --port 6379 --save '' --appendonly no\n\
    or point COPISTE_DATABASE__URL / COPISTE_REDIS__URL at running servers";

/// Throwaway servers started by [`ensure`]; stopped and deleted on drop.
pub struct LocalServices {
    /// The database server URL to use (configured or throwaway).
    pub database_url: Url,
    /// The Redis URL to use (configured or throwaway).
    pub redis_url: Url,
    /// A throwaway Redis this value started.
    redis: Option<Child>,
    /// A throwaway PostgreSQL this value started, which can be restarted.
    postgres: Option<Postgres>,
    dir: Option<tempfile::TempDir>,
}

/// A throwaway PostgreSQL server: its process and how to start it again.
struct Postgres {
    child: Child,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl std::fmt::Debug for LocalServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServices")
            .field("database_url", &crate::db::redact(&self.database_url))
            .field("redis_url", &self.redis_url.as_str())
            .field(
                "throwaway",
                &(usize::from(self.redis.is_some()) + usize::from(self.postgres.is_some())),
            )
            .finish()
    }
}

impl LocalServices {
    /// Whether anything was started.
    pub fn started_any(&self) -> bool {
        self.redis.is_some() || self.postgres.is_some()
    }

    /// Stops the throwaway PostgreSQL as a crash would (`pg_ctl stop -m
    /// immediate`: no checkpoint, clients cut off); see
    /// [`LocalServices::start_postgres_again`] (fault tests).
    pub fn stop_postgres(&mut self) -> anyhow::Result<()> {
        let pg = self
            .postgres
            .as_mut()
            .context("no throwaway PostgreSQL was started")?;
        let pg_ctl = find_binary("pg_ctl").context("pg_ctl not found")?;
        let status = as_postgres_user(&pg_ctl, pg.as_root)
            .arg("-D")
            .arg(&pg.data)
            .args(["stop", "-m", "immediate", "-w"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running pg_ctl stop")?;
        anyhow::ensure!(status.success(), "pg_ctl stop -m immediate failed");
        let _ = pg.child.wait();
        Ok(())
    }

    /// Starts the throwaway PostgreSQL stopped by
    /// [`LocalServices::stop_postgres`] on the same port and data.
    pub async fn start_postgres_again(&mut self) -> anyhow::Result<()> {
        let pg = self
            .postgres
            .as_mut()
            .context("no throwaway PostgreSQL was started")?;
        pg.child = spawn_postgres(&pg.data, &pg.socket_dir, pg.port, pg.as_root)?;
        let url = self.database_url.clone();
        wait_until("PostgreSQL", || postgres_answers(&url)).await
    }

    /// Kills the throwaway Redis (SIGKILL, as a crash: nothing is saved)
    /// and starts an empty one on the same port (fault tests).
    pub async fn restart_redis(&mut self) -> anyhow::Result<()> {
        self.stop_redis()?;
        self.start_redis_again().await
    }

    /// Kills the throwaway Redis (SIGKILL): it stays down until
    /// [`Self::start_redis_again`].
    pub fn stop_redis(&mut self) -> anyhow::Result<()> {
        let redis = self
            .redis
            .as_mut()
            .context("no throwaway Redis was started")?;
        let _ = redis.kill();
        let _ = redis.wait();
        Ok(())
    }

    /// Starts an empty Redis on the port of the stopped one.
    pub async fn start_redis_again(&mut self) -> anyhow::Result<()> {
        let port = self.redis_url.port().context("the Redis URL has no port")?;
        let redis = self
            .redis
            .as_mut()
            .context("no throwaway Redis was started")?;
        *redis = spawn_redis(port)?;
        let url = self.redis_url.clone();
        wait_until("Redis", || redis_answers(&url)).await
    }

    /// The environment a child process needs to use these services.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COPISTE_DATABASE__URL", self.database_url.to_string()),
            ("COPISTE_REDIS__URL", self.redis_url.to_string()),
        ]
    }
}

impl Drop for LocalServices {
    fn drop(&mut self) {
        let mut pg = self.postgres.take().map(|pg| pg.child);
        for child in self.redis.iter_mut().chain(pg.as_mut()) {
            // SIGKILL is fine: the data directory is thrown away.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Makes sure PostgreSQL and Redis answer, starting throwaway ones when
/// they do not and the binaries are installed.
pub async fn ensure(config: &Config) -> anyhow::Result<LocalServices> {
    let mut services = LocalServices {
        database_url: config.database_url(),
        redis_url: config.redis_url(),
        redis: None,
        postgres: None,
        dir: None,
    };
    let pg_up = postgres_answers(&services.database_url).await;
    let redis_up = redis_answers(&services.redis_url).await;
    if pg_up && redis_up {
        return Ok(services);
    }
    let dir = tempfile::Builder::new()
        .prefix("copiste-services-")
        .tempdir()
        .context("creating a directory for throwaway services")?;
    if !pg_up {
        let (pg, url) = start_postgres(dir.path(), &services.database_url).with_context(|| {
            format!(
                "PostgreSQL does not answer at {} and cannot be started here; {INSTALL_HELP}",
                crate::db::redact(&services.database_url)
            )
        })?;
        services.postgres = Some(pg);
        services.database_url = url;
        wait_until("PostgreSQL", || postgres_answers(&services.database_url)).await?;
        eprintln!(
            "started a throwaway PostgreSQL at {}",
            crate::db::redact(&services.database_url)
        );
    }
    if !redis_up {
        let (child, url) = start_redis().with_context(|| {
            format!(
                "Redis does not answer at {} and cannot be started here; {INSTALL_HELP}",
                services.redis_url
            )
        })?;
        services.redis = Some(child);
        services.redis_url = url;
        wait_until("Redis", || redis_answers(&services.redis_url)).await?;
        eprintln!("started a throwaway Redis at {}", services.redis_url);
    }
    services.dir = Some(dir);
    Ok(services)
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the throwaway {what} did not answer within 30 s")
}

async fn postgres_answers(url: &Url) -> bool {
    let mut admin = url.clone();
    admin.set_path("/postgres");
    let attempt = crate::db::Db::connect(&admin, 1);
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(db)) => {
            db.close().await;
            true
        }
        _ => false,
    }
}

async fn redis_answers(url: &Url) -> bool {
    crate::queue::answers(url, Duration::from_secs(3)).await
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian keeps the server binaries off PATH.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root).
fn as_postgres_user(binary: &Path, as_root: bool) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(binary);
        cmd
    } else {
        Command::new(binary)
    }
}

fn start_postgres(dir: &Path, configured: &Url) -> anyhow::Result<(Postgres, Url)> {
    let initdb = find_binary("initdb").context("initdb not found")?;
    let data = dir.join("pg");
    std::fs::create_dir_all(&data)?;
    let as_root = running_as_root();
    if as_root {
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .context("chown of the throwaway PostgreSQL directory")?;
        anyhow::ensure!(status.success(), "chown to postgres failed");
    }
    let user = if configured.username().is_empty() {
        "postgres"
    } else {
        configured.username()
    };
    let output = as_postgres_user(&initdb, as_root)
        .arg("-D")
        .arg(&data)
        .args(["-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .context("running initdb")?;
    anyhow::ensure!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port = free_port()?;
    let child = spawn_postgres(&data, dir, port, as_root)?;
    let mut url = configured.clone();
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    let pg = Postgres {
        child,
        data,
        socket_dir: dir.to_path_buf(),
        port,
        as_root,
    };
    Ok((pg, url))
}

fn spawn_postgres(
    data: &Path,
    socket_dir: &Path,
    port: u16,
    as_root: bool,
) -> anyhow::Result<Child> {
    let postgres = find_binary("postgres").context("postgres not found")?;
    as_postgres_user(&postgres, as_root)
        .arg("-D")
        .arg(data)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(socket_dir)
        .args(["-c", "fsync=off", "-c", "max_connections=300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting postgres")
}

fn start_redis() -> anyhow::Result<(Child, Url)> {
    let port = free_port()?;
    let child = spawn_redis(port)?;
    let url = Url::parse(&format!("redis://127.0.0.1:{port}"))?;
    Ok((child, url))
}

fn spawn_redis(port: u16) -> anyhow::Result<Child> {
    let server = find_binary("redis-server").context("redis-server not found")?;
    Command::new(server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")
}

/// Starts a throwaway Redis whatever the configured one does (tests that
/// must flush or stop Redis without disturbing anything else).
pub async fn throwaway_redis(config: &Config) -> anyhow::Result<LocalServices> {
    let (child, url) = start_redis()?;
    let services = LocalServices {
        database_url: config.database_url(),
        redis_url: url,
        redis: Some(child),
        postgres: None,
        dir: None,
    };
    wait_until("Redis", || redis_answers(&services.redis_url)).await?;
    Ok(services)
}

/// Starts a throwaway PostgreSQL whatever the configured one does (tests
/// that must stop or restart PostgreSQL without disturbing anything
/// else); its `database_url` names the `postgres` database.
pub async fn throwaway_postgres(config: &Config) -> anyhow::Result<LocalServices> {
    let dir = tempfile::Builder::new()
        .prefix("copiste-postgres-")
        .tempdir()
        .context("creating a directory for a throwaway PostgreSQL")?;
    let (pg, mut url) = start_postgres(dir.path(), &config.database_url())?;
    url.set_path("/postgres");
    let services = LocalServices {
        database_url: url,
        redis_url: config.redis_url(),
        redis: None,
        postgres: Some(pg),
        dir: Some(dir),
    };
    wait_until("PostgreSQL", || postgres_answers(&services.database_url)).await?;
    Ok(services)
}
