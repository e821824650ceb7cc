//! The one place where job kinds are registered: a worker runs exactly the
//! kinds listed in [`all`].

use std::{collections::HashMap, future::Future, pin::Pin};

use anyhow::anyhow;

use crate::db::Tx;

use super::{
    EnqueueError, EnqueueOptions, Job, JobContext, JobError, Outcome, bulk_render::BulkRender,
    closure::Closure, export_retry::ExportRetry, harmonisation_validation::HarmonisationValidation,
    housekeeping::Housekeeping, nightly_closure::NightlyClosure, noop::Noop,
    sweep::ExportRetrySweep, zip_prebuild::ZipPrebuild,
};

type RunFuture = Pin<Box<dyn Future<Output = Result<Outcome, JobError>> + Send>>;
type EnqueueManyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<uuid::Uuid>, EnqueueError>> + Send + 'a>>;
type EnqueueManyFn =
    for<'a> fn(&'a mut Tx, Vec<serde_json::Value>, EnqueueOptions) -> EnqueueManyFuture<'a>;

/// A registered job kind: its name, defaults, and how to run a payload.
#[derive(Clone, Copy)]
pub struct Handler {
    pub name: &'static str,
    pub max_attempts: u32,
    pub priority: i16,
    run: fn(serde_json::Value, JobContext) -> RunFuture,
    check: fn(serde_json::Value) -> Result<(), String>,
    enqueue_many: EnqueueManyFn,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("name", &self.name).finish()
    }
}

impl Handler {
    /// Decodes the payload and runs the job; an undecodable payload is a
    /// permanent error.
    pub fn run(&self, payload: serde_json::Value, ctx: JobContext) -> RunFuture {
        (self.run)(payload, ctx)
    }

    /// Checks that a payload decodes for this kind and passes its checks
    /// ([`Job::validate`]), with the reason (naming the field) if not.
    pub fn check(&self, payload: serde_json::Value) -> Result<(), String> {
        (self.check)(payload)
    }

    /// Writes one job per payload inside `tx`, in one statement (see
    /// [`super::enqueue_many`]): all or nothing. A payload that does not
    /// decode refuses the whole batch, naming its position (from 1).
    pub fn enqueue_many<'a>(
        &self,
        tx: &'a mut Tx,
        payloads: Vec<serde_json::Value>,
        opts: EnqueueOptions,
    ) -> EnqueueManyFuture<'a> {
        (self.enqueue_many)(tx, payloads, opts)
    }
}

/// Decodes and checks a payload of kind `J`; the reason names the JSON
/// path of the offending field (e.g. `establishment` or `options.details`).
pub fn decode<J: Job>(payload: serde_json::Value) -> Result<J, String> {
    let job: J = serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid {} payload: {inner}", J::NAME)
        } else {
            format!("invalid {} payload: {path}: {inner}", J::NAME)
        }
    })?;
    job.validate()
        .map_err(|e| format!("invalid {} payload: {e}", J::NAME))?;
    Ok(job)
}

fn run_json<J: Job>(payload: serde_json::Value, ctx: JobContext) -> RunFuture {
    Box::pin(async move {
        let job: J = decode(payload).map_err(|e| JobError::Permanent(anyhow!(e)))?;
        job.run(ctx).await
    })
}

fn check_json<J: Job>(payload: serde_json::Value) -> Result<(), String> {
    decode::<J>(payload).map(|_| ())
}

fn enqueue_many_json<J: Job>(
    tx: &mut Tx,
    payloads: Vec<serde_json::Value>,
    opts: EnqueueOptions,
) -> EnqueueManyFuture<'_> {
    Box::pin(async move {
        let jobs = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| decode::<J>(p).map_err(|e| format!("payload {}: {e}", i + 1)))
            .collect::<Result<Vec<J>, String>>()
            .map_err(EnqueueError::Invalid)?;
        super::enqueue_many(tx, &jobs, opts).await
    })
}

fn handler<J: Job>() -> Handler {
    Handler {
        name: J::NAME,
        max_attempts: J::MAX_ATTEMPTS,
        priority: J::PRIORITY,
        run: run_json::<J>,
        check: check_json::<J>,
        enqueue_many: enqueue_many_json::<J>,
    }
}

/// Every job kind this build knows.
pub fn all() -> Vec<Handler> {
    vec![
        handler::<Noop>(),
        handler::<Closure>(),
        handler::<ExportRetry>(),
        handler::<HarmonisationValidation>(),
        handler::<BulkRender>(),
        handler::<NightlyClosure>(),
        handler::<ExportRetrySweep>(),
        handler::<Housekeeping>(),
        handler::<ZipPrebuild>(),
    ]
}

/// The registered kinds by name.
pub fn by_name() -> HashMap<&'static str, Handler> {
    all().into_iter().map(|h| (h.name, h)).collect()
}

/// The handler of `kind`, or an error listing the known kinds.
pub fn find(kind: &str) -> Result<Handler, String> {
    all().into_iter().find(|h| h.name == kind).ok_or_else(|| {
        let names: Vec<_> = all().iter().map(|h| h.name).collect();
        unknown_kind(kind, &names)
    })
}

/// Why a job of `kind` cannot run: no handler of that name among `known`.
pub fn unknown_kind(kind: &str, known: &[&str]) -> String {
    format!(
        "unknown job kind {kind:?}; known kinds: {}",
        known.join(", ")
    )
}
