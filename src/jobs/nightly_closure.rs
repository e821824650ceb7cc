//! `nightly-closure`: enqueues a closure for every (ponctuel or E3C exam,
//! establishment) that is fully graded, never closed and not published —
//! one job each.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Outcome};
use crate::{closure, db};

/// The `nightly-closure` job's payload (no parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightlyClosure {}

impl Job for NightlyClosure {
    const NAME: &'static str = "nightly-closure";

    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let db = &ctx.services.db;
        let units = db::schedule::units_to_close(db).await?;
        let mut enqueued = Vec::new();
        let mut refused = Vec::new();
        for (exam, uai) in units {
            match closure::request_closure(db, &exam, Some(&uai), "scheduler").await? {
                Ok(units) => {
                    for u in units {
                        match u.outcome {
                            Ok(done) => enqueued.extend(done.job()),
                            Err(r) => refused.push(r.to_string()),
                        }
                    }
                }
                Err(r) => refused.push(r.to_string()),
            }
        }
        Ok(Outcome::Succeeded(
            serde_json::json!({"closures": enqueued, "refused": refused}),
        ))
    }
}
