//! Configuration: `config/default.toml` (compiled in), an optional file,
//! then `COPISTE_…` environment variables (levels joined by `__`).
//! Secrets are accepted from the environment only.

use std::{fmt, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use url::Url;

/// The defaults, compiled into the binary so that it runs from anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The largest `queue.window`: Redis holds at most the window of waiting
/// ids, and apalis-redis' fetch fails on a queue of about 8 000.
pub const MAX_WINDOW: u32 = 2000;

/// A value that must not be printed or logged.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Every setting of copiste.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub storage: StorageConfig,
    pub exporters: ExportersConfig,
    pub exports: ExportsConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    pub downloads: DownloadsConfig,
    pub import: ImportConfig,
    pub render: RenderConfig,
    pub scheduler: SchedulerConfig,
    pub log: LogConfig,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Url,
    /// From `COPISTE_DATABASE__PASSWORD` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub max_connections: u32,
}

/// `[redis]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Url,
    /// From `COPISTE_REDIS__PASSWORD` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub namespace: String,
}

/// Which object store backs `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub root: PathBuf,
    pub s3: S3Config,
}

/// `[storage.s3]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub allow_http: bool,
}

/// How an export target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExporterKind {
    /// JSON documents written to the object store.
    Outbox,
    /// JSON over HTTP(S).
    Http,
}

/// `[exporters]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportersConfig {
    pub cyclades: ExporterConfig,
    pub imagin: ExporterConfig,
}

/// `[exporters.<target>]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    pub kind: ExporterKind,
    pub base_url: Url,
    pub timeout_secs: u64,
    /// Requests in flight to this target, per process.
    pub concurrency: u32,
}

/// `[exports]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Items per document sent to a target.
    pub batch_size: u32,
}

/// `[queue]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub window: u32,
    pub pump_interval_ms: u64,
    pub redeliver_after_secs: u64,
    pub reconcile_interval_secs: u64,
}

/// `[worker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: u32,
    pub lease_secs: u64,
    pub shutdown_grace_secs: u64,
}

/// `[jobs]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub backoff_base_secs: f64,
    pub backoff_max_secs: f64,
    pub retention_days: u32,
}

/// `[downloads]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadsConfig {
    pub link_ttl_secs: u64,
    pub max_part_bytes: u64,
    pub public_base_url: Url,
    /// From `COPISTE_DOWNLOADS__SIGNING_KEY` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<Secret>,
    /// Objects under `downloads/` that no download record names (what a
    /// killed zip build leaves) are deleted by housekeeping once this old;
    /// longer than the longest zip build.
    pub abandoned_after_secs: u64,
}

/// `[import]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// The largest scan file `copiste import` accepts, in bytes; a larger
    /// one is refused before it is read.
    pub max_scan_bytes: u64,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (one line per event, for people) or `json` (one JSON object
    /// per line, for a log collector); `--log-format` wins.
    pub format: LogFormat,
}

/// `[render]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderConfig {
    /// The bytes of rendered PDFs a process keeps in memory, so that a
    /// copy opened again is not rendered again; 0 keeps none.
    pub cache_bytes: u64,
}

/// `[scheduler]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The directory of the schedule files (`*.toml`) read by `copiste
    /// scheduler` and `copiste schedules …` without `--dir`; a relative
    /// path is relative to the working directory.
    pub dir: PathBuf,
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error(
        "configuration: {setting} is a secret and is read from the environment only ({env}), not from {file}"
    )]
    SecretInFile {
        setting: &'static str,
        env: &'static str,
        file: String,
    },
    #[error("configuration: {setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
}

/// The secret settings: (dotted name, environment variable).
const SECRETS: &[(&str, &str)] = &[
    ("database.password", "COPISTE_DATABASE__PASSWORD"),
    ("redis.password", "COPISTE_REDIS__PASSWORD"),
    ("downloads.signing_key", "COPISTE_DOWNLOADS__SIGNING_KEY"),
];

/// The `COPISTE_…` environment variables, levels joined by `__`.
/// `COPISTE_CONFIG` names the configuration file (`--config`): it is not
/// a setting.
fn env() -> Env {
    Env::prefixed("COPISTE_").ignore(&["config"]).split("__")
}

impl Config {
    /// Loads with explicit overrides on top of the environment (tests).
    pub fn load_with_overrides<T: Serialize>(overrides: T) -> Result<Self, ConfigError> {
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(env())
            .merge(Serialized::defaults(overrides));
        Self::finish(figment)
    }

    /// Loads the defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            let from_file = Figment::from(Toml::file(file));
            for &(setting, env) in SECRETS {
                if from_file.find_value(setting).is_ok() {
                    return Err(ConfigError::SecretInFile {
                        setting,
                        env,
                        file: file.display().to_string(),
                    });
                }
            }
            figment = figment.merge(Toml::file(file));
        }
        Self::finish(figment.merge(env()))
    }

    fn finish(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // Name each setting as this file's documentation does
            // (`queue.window`), then say what is wrong and where it came from.
            let messages: Vec<String> = e
                .into_iter()
                .map(|e| {
                    let origin = e
                        .metadata
                        .as_ref()
                        .map(|m| format!(" (from {})", m.name))
                        .unwrap_or_default();
                    if e.path.is_empty() {
                        format!("{}{origin}", e.kind)
                    } else {
                        format!("{}: {}{origin}", e.path.join(".").to_lowercase(), e.kind)
                    }
                })
                .collect();
            ConfigError::Invalid(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting, naming the first that is wrong.
    fn validate(&self) -> Result<(), ConfigError> {
        self.check_positive()?;
        self.check_queue_and_backoff()?;
        self.check_services()
    }

    /// The settings that must be greater than zero.
    fn check_positive(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            ("queue.window", u64::from(self.queue.window)),
            ("queue.pump_interval_ms", self.queue.pump_interval_ms),
            (
                "queue.redeliver_after_secs",
                self.queue.redeliver_after_secs,
            ),
            (
                "queue.reconcile_interval_secs",
                self.queue.reconcile_interval_secs,
            ),
            ("worker.concurrency", u64::from(self.worker.concurrency)),
            ("worker.lease_secs", self.worker.lease_secs),
            ("downloads.link_ttl_secs", self.downloads.link_ttl_secs),
            ("downloads.max_part_bytes", self.downloads.max_part_bytes),
            (
                "exporters.cyclades.timeout_secs",
                self.exporters.cyclades.timeout_secs,
            ),
            (
                "exporters.imagin.timeout_secs",
                self.exporters.imagin.timeout_secs,
            ),
            (
                "exporters.cyclades.concurrency",
                u64::from(self.exporters.cyclades.concurrency),
            ),
            (
                "exporters.imagin.concurrency",
                u64::from(self.exporters.imagin.concurrency),
            ),
            ("exports.batch_size", u64::from(self.exports.batch_size)),
            ("import.max_scan_bytes", self.import.max_scan_bytes),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::Setting {
                    setting,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }

    /// The queue's window and the backoff's bounds.
    fn check_queue_and_backoff(&self) -> Result<(), ConfigError> {
        if self.queue.window > MAX_WINDOW {
            return Err(ConfigError::Setting {
                setting: "queue.window",
                reason: format!(
                    "must be at most {MAX_WINDOW}: apalis-redis cannot fetch from a queue \
                     holding ~8 000 ids, and Redis may briefly hold twice the window"
                ),
            });
        }
        if !(self.jobs.backoff_base_secs.is_finite() && self.jobs.backoff_base_secs >= 0.0) {
            return Err(ConfigError::Setting {
                setting: "jobs.backoff_base_secs",
                reason: "must be a non-negative number".into(),
            });
        }
        if !(self.jobs.backoff_max_secs.is_finite()
            && self.jobs.backoff_max_secs >= self.jobs.backoff_base_secs)
        {
            return Err(ConfigError::Setting {
                setting: "jobs.backoff_max_secs",
                reason: "must be a number at least jobs.backoff_base_secs".into(),
            });
        }
        Ok(())
    }

    /// The services' URLs (without passwords), Redis's namespace and the
    /// S3 bucket.
    fn check_services(&self) -> Result<(), ConfigError> {
        if !matches!(self.database.url.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::Setting {
                setting: "database.url",
                reason: format!(
                    "expected a postgres:// URL, got scheme {}",
                    self.database.url.scheme()
                ),
            });
        }
        if !matches!(self.redis.url.scheme(), "redis" | "rediss") {
            return Err(ConfigError::Setting {
                setting: "redis.url",
                reason: format!(
                    "expected a redis:// URL, got scheme {}",
                    self.redis.url.scheme()
                ),
            });
        }
        let ns = &self.redis.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::Setting {
                setting: "redis.namespace",
                reason: format!("{ns:?} must be non-empty letters, digits, '-', '_' or '.'"),
            });
        }
        if self.storage.kind == StorageKind::S3 && self.storage.s3.bucket.is_empty() {
            return Err(ConfigError::Setting {
                setting: "storage.s3.bucket",
                reason: "required when storage.kind = \"s3\"".into(),
            });
        }
        for (setting, url) in [
            ("database.url", &self.database.url),
            ("redis.url", &self.redis.url),
        ] {
            if url.password().is_some() {
                return Err(ConfigError::Setting {
                    setting,
                    reason: "must not carry a password; set the matching *__PASSWORD environment variable".into(),
                });
            }
        }
        Ok(())
    }

    /// The database URL with the password from the environment, if any.
    pub fn database_url(&self) -> Url {
        let mut url = self.database.url.clone();
        if let Some(password) = &self.database.password {
            // A postgres URL always has a host, so this cannot fail.
            let _ = url.set_password(Some(password.expose()));
        }
        url
    }

    /// The Redis URL with the password from the environment, if any.
    pub fn redis_url(&self) -> Url {
        let mut url = self.redis.url.clone();
        if let Some(password) = &self.redis.password {
            let _ = url.set_password(Some(password.expose()));
        }
        url
    }

    /// The lease given to a claimed job.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.worker.lease_secs)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}
