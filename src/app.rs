//! The application value: everything an operation or a job needs from the
//! outside world, built once per process and shared by every front door
//! (the command line, the jobs, the HTTP server).

use std::sync::Arc;

use crate::{config::Config, db::Db, export::Exporters, rendered::Rendered, storage::Storage};

/// The database, the object store, the export targets and the
/// configuration of one process. Cloning is cheap (handles and an `Arc`).
///
/// There is no queue producer here on purpose: an operation enqueues by
/// writing the job's row into the ledger (Postgres) inside its own
/// transaction, and the worker's pump hands queued ids to Redis. So an
/// operation never talks to Redis, and a job exists if and only if the
/// decision that asked for it committed.
#[derive(Clone, Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub storage: Storage,
    pub exporters: Exporters,
    /// Copies rendered lately, kept in memory (`[render] cache_bytes`).
    pub rendered: Rendered,
}

impl App {
    /// Builds the export targets the configuration names around a database
    /// and a store.
    pub fn new(config: Config, db: Db, storage: Storage) -> anyhow::Result<Self> {
        let exporters = Exporters::from_config(&config, &storage)?;
        Ok(Self {
            rendered: Rendered::with_capacity(config.render.cache_bytes),
            config: Arc::new(config),
            db,
            storage,
            exporters,
        })
    }
}
