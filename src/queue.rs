//! Redis delivery adapter (apalis + apalis-redis): the only module that
//! names apalis types. Redis carries nothing but job ids; the ledger in
//! Postgres decides what runs (see `crate::worker`).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder, WorkerBuilderExt};
use apalis_core::backend::factory::BackendFactory;
use apalis_redis::{Config as RedisQueueConfig, RedisStorage, factory::RedisStorageFactory};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;

/// What travels through Redis: the id of a job row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub job_id: Uuid,
}

type HandlerFn =
    dyn Fn(Uuid) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> + Send + Sync + 'static;

/// Handles one delivered job id; its future completes when the delivery
/// may be acknowledged.
#[derive(Clone)]
pub struct DeliveryHandler {
    f: Arc<HandlerFn>,
}

impl DeliveryHandler {
    /// Wraps the function called for every delivery.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(Uuid) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            f: Arc::new(move |id| Box::pin(f(id))),
        }
    }

    fn call(&self, id: Uuid) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        (self.f)(id)
    }
}

/// The name of the apalis queue (and prefix of its Redis keys).
pub fn queue_name(config: &Config) -> String {
    format!("{}.jobs", config.redis.namespace)
}

fn queue_config(config: &Config) -> RedisQueueConfig {
    RedisQueueConfig::default()
        .queue(queue_name(config))
        // The heartbeat is also the idle poll when a pub/sub wake-up is
        // missed; keep it short.
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(5)
        .batch_size(32)
}

/// The producer side: pushes job ids to Redis.
#[derive(Clone)]
pub struct Producer {
    storage: RedisStorage<Delivery>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// Connects to the configured Redis.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config.redis_url();
        let conn = apalis_redis::connect(url.as_str())
            .await
            .with_context(|| format!("connecting to Redis at {}", crate::db::redact(&url)))?;
        let storage = RedisStorage::new(conn).with_config(queue_config(config));
        Ok(Self { storage })
    }

    /// Pushes the ids, in order.
    pub async fn push(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut storage = self.storage.clone();
        storage
            .push_bulk(ids.iter().map(|&job_id| Delivery { job_id }).collect())
            .await
            .map_err(|e| anyhow::anyhow!("pushing {} job ids to Redis: {e}", ids.len()))?;
        // apalis-redis 1.0 files every pushed task in its "scheduled" set
        // (run_at defaults to now) and only announces tasks pushed to the
        // active list, so idle consumers would wait for their next
        // heartbeat. Announce the push ourselves on the channel the
        // consumers' pub/sub listener watches; their fetch promotes the
        // due tasks.
        let channel = format!(
            "tasks:{}:active:available",
            storage.get_config().queue.as_ref()
        );
        let conn = storage.get_connection();
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("1")
            .query_async::<i64>(conn)
            .await
            .context("announcing pushed job ids")?;
        Ok(())
    }
}

async fn on_delivery(
    delivery: Delivery,
    handler: Data<DeliveryHandler>,
) -> Result<(), BoxDynError> {
    handler.call(delivery.job_id).await;
    Ok(())
}

/// Consumes deliveries as worker `worker_name` (unique per process and
/// per restart), at most `concurrency` at once, until `stop` is cancelled
/// or the consumer fails (e.g. Redis lost its worker registration).
pub async fn consume(
    config: &Config,
    worker_name: &str,
    concurrency: usize,
    handler: DeliveryHandler,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut url = config.redis_url();
    // The pub/sub wake-up (no polling delay when idle) needs RESP3.
    if !url.query_pairs().any(|(k, _)| k == "protocol") {
        url.query_pairs_mut().append_pair("protocol", "resp3");
    }
    let client = redis::Client::open(url.as_str())
        .with_context(|| format!("opening Redis at {}", crate::db::redact(&url)))?;
    let mut factory = RedisStorageFactory::new(client)
        .await
        .with_context(|| format!("connecting to Redis at {}", crate::db::redact(&url)))?;
    let backend =
        BackendFactory::<Delivery>::create_with_config(&mut factory, queue_config(config))
            .context("creating the Redis consumer")?;
    let worker = WorkerBuilder::new(worker_name)
        .backend(backend)
        .concurrency(concurrency)
        .data(handler)
        .build(on_delivery);
    worker
        .run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("Redis consumer {worker_name} stopped: {e}"))
}

/// A plain connection to the configured Redis.
async fn connect(config: &Config) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let url = config.redis_url();
    let client = redis::Client::open(url.as_str())
        .with_context(|| format!("opening Redis at {}", crate::db::redact(&url)))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", crate::db::redact(&url)))
}

/// Deletes every Redis key of this configuration's queue (tests, benches,
/// and operators retiring a namespace). Returns how many were deleted.
pub async fn purge(config: &Config) -> anyhow::Result<u64> {
    let mut conn = connect(config).await?;
    let pattern = format!("{}*", queue_name(config));
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .context("scanning queue keys")?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await
                .context("deleting queue keys")?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Removes what apalis-redis keeps for finished deliveries — the id in
/// `<queue>:done`, its `<queue>:meta:<id>` hash and its `<queue>:data`
/// entry — and workers whose last heartbeat is over an hour old. apalis
/// never expires them; the ledger in Postgres keeps the history. Returns
/// how many entries were removed.
pub async fn sweep_finished(config: &Config) -> anyhow::Result<u64> {
    let mut conn = connect(config).await?;
    let queue = queue_name(config);
    let done_set = format!("{queue}:done");
    let data = format!("{queue}:data");
    let mut removed = 0u64;
    loop {
        let ids: Vec<String> = redis::cmd("SPOP")
            .arg(&done_set)
            .arg(500)
            .query_async(&mut conn)
            .await
            .context("taking finished deliveries")?;
        if ids.is_empty() {
            break;
        }
        let metas: Vec<String> = ids.iter().map(|id| format!("{queue}:meta:{id}")).collect();
        removed += redis::cmd("UNLINK")
            .arg(&metas)
            .query_async::<u64>(&mut conn)
            .await
            .context("deleting delivery metadata")?;
        removed += redis::cmd("HDEL")
            .arg(&data)
            .arg(&ids)
            .query_async::<u64>(&mut conn)
            .await
            .context("deleting delivery data")?;
    }
    // Workers that stopped beating an hour ago are gone.
    let workers = format!("{queue}:workers");
    let cutoff = chrono::Utc::now().timestamp() - 3600;
    let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&workers)
        .arg("-inf")
        .arg(cutoff)
        .query_async(&mut conn)
        .await
        .context("listing stale workers")?;
    for worker in stale {
        removed += redis::cmd("ZREM")
            .arg(&workers)
            .arg(&worker)
            .query_async::<u64>(&mut conn)
            .await
            .context("forgetting a stale worker")?;
        redis::cmd("UNLINK")
            .arg(format!("{queue}:workers:metadata:{worker}"))
            .query_async::<u64>(&mut conn)
            .await
            .context("deleting a stale worker's metadata")?;
    }
    Ok(removed)
}
