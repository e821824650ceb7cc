//! `nightly-closure`: enqueues a closure for every (ponctuel or E3C exam,
//! establishment) that is fully graded, never closed and not published —
//! one job each.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Kind, Outcome};
use crate::{
    closure::{self, request::UnitsInput},
    db,
    op::{Actor, OpError},
};

/// The `nightly-closure` job's payload (no parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightlyClosure {}

impl Kind for NightlyClosure {
    const NAME: &'static str = "nightly-closure";
}

impl Job for NightlyClosure {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let db = &ctx.app.db;
        let units = db::schedule::units_to_close(db).await?;
        let mut enqueued = Vec::new();
        let mut refused = Vec::new();
        for (exam, uai) in units {
            let input = UnitsInput::unit(exam, uai);
            match closure::request_closure(&ctx.app, &Actor::Scheduler, &input).await {
                Ok(units) => {
                    for u in units {
                        match u.outcome {
                            Ok(done) => enqueued.extend(done.job()),
                            Err(r) => refused.push(r.to_string()),
                        }
                    }
                }
                Err(OpError::Internal(e)) => return Err(e.into()),
                Err(r) => refused.push(r.to_string()),
            }
        }
        Ok(Outcome::Succeeded(
            serde_json::json!({"closures": enqueued, "refused": refused}),
        ))
    }
}
