//! The one place where job kinds are registered: a worker runs exactly the
//! kinds listed in [`all`].

use std::{collections::HashMap, future::Future, pin::Pin};

use anyhow::anyhow;

use super::{
    Job, JobContext, JobError, Outcome, bulk_render::BulkRender, closure::Closure,
    export_retry::ExportRetry, harmonisation_validation::HarmonisationValidation,
    housekeeping::Housekeeping, nightly_closure::NightlyClosure, noop::Noop,
    sweep::ExportRetrySweep,
};

type RunFuture = Pin<Box<dyn Future<Output = Result<Outcome, JobError>> + Send>>;

/// A registered job kind: its name, defaults, and how to run a payload.
#[derive(Clone, Copy)]
pub struct Handler {
    pub name: &'static str,
    pub max_attempts: u32,
    pub priority: i16,
    run: fn(serde_json::Value, JobContext) -> RunFuture,
    check: fn(serde_json::Value) -> Result<(), String>,
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

    /// Checks that a payload decodes for this kind, with the reason if not.
    pub fn check(&self, payload: serde_json::Value) -> Result<(), String> {
        (self.check)(payload)
    }
}

fn run_json<J: Job>(payload: serde_json::Value, ctx: JobContext) -> RunFuture {
    Box::pin(async move {
        let job: J = serde_json::from_value(payload)
            .map_err(|e| JobError::Permanent(anyhow!("invalid {} payload: {e}", J::NAME)))?;
        job.run(ctx).await
    })
}

fn check_json<J: Job>(payload: serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<J>(payload)
        .map(|_| ())
        .map_err(|e| format!("invalid {} parameters: {e}", J::NAME))
}

fn handler<J: Job>() -> Handler {
    Handler {
        name: J::NAME,
        max_attempts: J::MAX_ATTEMPTS,
        priority: J::PRIORITY,
        run: run_json::<J>,
        check: check_json::<J>,
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
        format!(
            "unknown job kind {kind:?}; known kinds: {}",
            names.join(", ")
        )
    })
}
