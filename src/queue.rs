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
    keys: QueueKeys,
}

/// The Redis keys of apalis-redis 1.0 for one queue (its `Config`
/// builds the same names; they are spelled out here because copiste
/// reads them directly to bound and reconcile what Redis holds).
#[derive(Debug, Clone)]
struct QueueKeys {
    /// Task ids due now, in delivery order (a list).
    active: String,
    /// Task ids with a time to become due (a sorted set); every push
    /// lands here first, and every fetch moves *all* due ones to
    /// `active` in one Lua call, which fails from ~8 000 ids on.
    scheduled: String,
    /// Registered consumers (a sorted set scored by last heartbeat).
    workers: String,
    /// Prefix of each consumer's set of fetched, unacknowledged tasks.
    inflight: String,
    /// Task id → payload (a hash).
    data: String,
    /// Prefix of each task's metadata hash.
    meta: String,
    /// Acknowledged task ids (a set).
    done: String,
}

impl QueueKeys {
    fn new(queue: &str) -> Self {
        Self {
            active: format!("{queue}:active"),
            scheduled: format!("{queue}:scheduled"),
            workers: format!("{queue}:workers"),
            inflight: format!("{queue}:inflight"),
            data: format!("{queue}:data"),
            meta: format!("{queue}:meta"),
            done: format!("{queue}:done"),
        }
    }
}

/// What Redis holds of one queue, read by [`Producer::holdings`].
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Task ids not yet fetched by a consumer (active and scheduled).
    pub waiting: u64,
    /// Task ids fetched by a consumer and not acknowledged yet (waiting
    /// for a slot, running, or writing their outcome).
    pub in_consumers: u64,
    /// The job ids of all those tasks.
    pub job_ids: std::collections::HashSet<Uuid>,
}

impl Holdings {
    /// Every task id Redis holds for delivery.
    pub fn total(&self) -> u64 {
        self.waiting + self.in_consumers
    }
}

/// Above this many waiting ids a queue is beyond what apalis-redis can
/// fetch from (~8 000), or on its way there: it is emptied and the ledger
/// pushes its window again. [`crate::config::MAX_WINDOW`] keeps a sound
/// configuration well below it.
pub const OVERFLOW: u64 = 5000;

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
        Ok(Self {
            storage,
            keys: QueueKeys::new(&queue_name(config)),
        })
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        let mut storage = self.storage.clone();
        storage.get_connection().clone()
    }

    /// How many task ids wait in Redis to be fetched (cheap: two counts).
    pub async fn waiting(&self) -> anyhow::Result<u64> {
        let mut conn = self.conn();
        let (active, scheduled): (u64, u64) = redis::pipe()
            .atomic()
            .llen(&self.keys.active)
            .zcard(&self.keys.scheduled)
            .query_async(&mut conn)
            .await
            .context("counting the ids waiting in Redis")?;
        Ok(active + scheduled)
    }

    /// The task ids Redis holds for delivery, read in one transaction (so
    /// that an id moving between lists while this reads is seen once):
    /// the in-flight set of each registered consumer, then the lists
    /// (the active list, the scheduled set, one set per consumer).
    async fn held(
        &self,
        conn: &mut redis::aio::ConnectionManager,
    ) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
        let workers: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.keys.workers)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .context("listing the queue's consumers")?;
        let inflight: Vec<String> = workers
            .iter()
            .map(|w| format!("{}:{w}", self.keys.inflight))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lrange(&self.keys.active, 0, -1)
            .zrange(&self.keys.scheduled, 0, -1);
        for set in &inflight {
            pipe.smembers(set);
        }
        let lists: Vec<Vec<String>> = pipe
            .query_async(conn)
            .await
            .context("reading the ids held in Redis")?;
        Ok((inflight, lists))
    }

    /// The stored payload of each task, in order (`None` when missing).
    async fn payloads(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        tasks: &[String],
    ) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(1000) {
            let payloads: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&self.keys.data)
                .arg(chunk)
                .query_async(conn)
                .await
                .context("reading the payloads of ids held in Redis")?;
            out.extend(payloads);
        }
        Ok(out)
    }

    /// Everything Redis holds for delivery: waiting task ids, those fetched
    /// by each registered consumer, and the job ids they carry.
    pub async fn holdings(&self) -> anyhow::Result<Holdings> {
        let mut conn = self.conn();
        let (_, lists) = self.held(&mut conn).await?;
        // The active list and the scheduled set, then one set per consumer.
        let waiting: usize = lists.iter().take(2).map(Vec::len).sum();
        let tasks: Vec<String> = lists.into_iter().flatten().collect();
        let (waiting, in_consumers) = (waiting as u64, (tasks.len() - waiting) as u64);
        let job_ids = self
            .payloads(&mut conn, &tasks)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|p| serde_json::from_slice::<Delivery>(&p).ok())
            .map(|d| d.job_id)
            .collect();
        Ok(Holdings {
            waiting,
            in_consumers,
            job_ids,
        })
    }

    /// Removes the tasks Redis holds (waiting or fetched by a consumer)
    /// whose payload is missing or is not a [`Delivery`]: apalis-redis
    /// fails a consumer's whole fetch on one task it cannot decode, and
    /// gives the batch back to the queue once that consumer is taken for
    /// dead, so one such task (written by hand, by another program or an
    /// older version) would stop a consumer again and again. Returns how
    /// many were removed.
    pub async fn drop_undecodable(&self) -> anyhow::Result<u64> {
        let mut conn = self.conn();
        let (inflight, lists) = self.held(&mut conn).await?;
        let mut tasks: Vec<String> = lists.into_iter().flatten().collect();
        tasks.sort();
        tasks.dedup();
        let payloads = self.payloads(&mut conn, &tasks).await?;
        let junk: Vec<&String> = tasks
            .iter()
            .zip(payloads)
            .filter(|(_, p)| {
                p.as_ref()
                    .is_none_or(|p| serde_json::from_slice::<Delivery>(p).is_err())
            })
            .map(|(task, _)| task)
            .collect();
        for task in &junk {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .lrem(&self.keys.active, 0, *task)
                .zrem(&self.keys.scheduled, *task)
                .hdel(&self.keys.data, *task)
                .unlink(format!("{}:{task}", self.keys.meta));
            for set in &inflight {
                pipe.srem(set, *task);
            }
            let _: () = pipe
                .query_async(&mut conn)
                .await
                .context("removing a task that is not a delivery")?;
        }
        Ok(junk.len() as u64)
    }

    /// Gives the tasks fetched by consumer `worker` (one that stopped and
    /// will not acknowledge them) back to the queue at once and forgets
    /// the consumer, instead of waiting for apalis to take it for dead.
    /// A task whose job is running or done elsewhere is refused by the
    /// claim. Returns how many tasks were given back.
    pub async fn release_consumer(&self, worker: &str) -> anyhow::Result<u64> {
        let mut conn = self.conn();
        let set = format!("{}:{worker}", self.keys.inflight);
        let tasks: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut conn)
            .await
            .context("reading a stopped consumer's tasks")?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !tasks.is_empty() {
            pipe.rpush(&self.keys.active, &tasks);
        }
        pipe.del(&set).zrem(&self.keys.workers, worker);
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .context("giving a stopped consumer's tasks back")?;
        Ok(tasks.len() as u64)
    }

    /// Removes the leftovers of acknowledged deliveries (apalis keeps
    /// them forever): a worker calls it every second, so Redis stays flat
    /// however many jobs run. Returns how many entries were removed.
    pub async fn sweep_done(&self) -> anyhow::Result<u64> {
        sweep_done(&mut self.conn(), &self.keys).await
    }

    /// Empties the queue's waiting ids (active and scheduled) with their
    /// payloads: the recovery from a backlog apalis-redis cannot fetch.
    /// The ledger still knows every job; the reconciler then finds their
    /// ids missing from Redis and the pump hands them over again. Returns
    /// how many ids were dropped.
    pub async fn drop_waiting(&self) -> anyhow::Result<u64> {
        let mut conn = self.conn();
        let (active, scheduled): (Vec<String>, Vec<String>) = redis::pipe()
            .lrange(&self.keys.active, 0, -1)
            .zrange(&self.keys.scheduled, 0, -1)
            .query_async(&mut conn)
            .await
            .context("reading the ids waiting in Redis")?;
        let _: () = redis::pipe()
            .del(&self.keys.active)
            .del(&self.keys.scheduled)
            .query_async(&mut conn)
            .await
            .context("emptying the waiting ids")?;
        let tasks: Vec<String> = active.into_iter().chain(scheduled).collect();
        for chunk in tasks.chunks(1000) {
            let metas: Vec<String> = chunk
                .iter()
                .map(|t| format!("{}:{t}", self.keys.meta))
                .collect();
            let _: () = redis::pipe()
                .hdel(&self.keys.data, chunk)
                .unlink(&metas)
                .query_async(&mut conn)
                .await
                .context("deleting the payloads of dropped ids")?;
        }
        Ok(tasks.len() as u64)
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

/// Removes the leftovers of acknowledged deliveries (see
/// [`sweep_finished`]), 500 at a time until none is left.
async fn sweep_done<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &QueueKeys,
) -> anyhow::Result<u64> {
    let mut removed = 0u64;
    loop {
        let ids: Vec<String> = redis::cmd("SPOP")
            .arg(&keys.done)
            .arg(500)
            .query_async(conn)
            .await
            .context("taking finished deliveries")?;
        if ids.is_empty() {
            return Ok(removed);
        }
        let metas: Vec<String> = ids.iter().map(|id| format!("{}:{id}", keys.meta)).collect();
        let (metas, data): (u64, u64) = redis::pipe()
            .unlink(&metas)
            .hdel(&keys.data, &ids)
            .query_async(conn)
            .await
            .context("deleting finished deliveries")?;
        removed += metas + data;
    }
}

/// Whether a Redis server answers PING at `url` within `within`.
pub async fn answers(url: &url::Url, within: Duration) -> bool {
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return false;
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Ok(_)))
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
    let mut deleted = 0u64;
    for keys in keys(&mut conn, config).await?.chunks(1000) {
        deleted += redis::cmd("UNLINK")
            .arg(keys)
            .query_async::<u64>(&mut conn)
            .await
            .context("deleting queue keys")?;
    }
    Ok(deleted)
}

/// How many Redis keys this configuration's queue has (tests and checks
/// that Redis stays flat).
pub async fn key_count(config: &Config) -> anyhow::Result<usize> {
    let mut conn = connect(config).await?;
    Ok(keys(&mut conn, config).await?.len())
}

/// Every Redis key of this configuration's queue.
async fn keys(
    conn: &mut redis::aio::MultiplexedConnection,
    config: &Config,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{}*", queue_name(config));
    let mut cursor: u64 = 0;
    let mut all = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut *conn)
            .await
            .context("scanning queue keys")?;
        all.extend(keys);
        if next == 0 {
            return Ok(all);
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
    let mut removed = sweep_done(&mut conn, &QueueKeys::new(&queue)).await?;
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
